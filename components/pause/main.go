// Command pause is the sandbox process of every pod: it holds the pod's namespaces open while the
// pod's containers come and go, so it does nothing but wait for the runtime to stop it. As PID 1 of
// a pod that shares its PID namespace it also inherits orphaned processes, and reaps them so they
// do not pile up as zombies.
//
// Baked into the image as geminik8s.local/pause (builder/src/images): the appliance has no
// registry to pull a sandbox image from.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped by the builder (-X main.version), so `pause -version` names the image tag it came from.
var version = "dev"

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-version" {
		fmt.Println(version)
		return
	}
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: pause [-version]: blocks until SIGTERM or SIGINT, reaping exited children")
		os.Exit(2)
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reapChildren()
			continue
		}
		// The runtime stopping the sandbox is the normal end of its life, not a failure.
		os.Exit(0)
	}
}

// reapChildren collects every child that has exited: signals coalesce, so one SIGCHLD may stand for many.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
