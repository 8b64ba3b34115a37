// Command kubernetes is one binary carrying the upstream Kubernetes control-plane and node
// programs (the hyperkube pattern). The program is chosen by the name the binary is called by (a
// link such as /usr/lib/geminik8s/bin/kubelet -> kubernetes) or, failing that, by the first
// argument (`kubernetes kube-apiserver --version`). One binary instead of five keeps the shared
// Kubernetes libraries in the image once: 121 MB instead of 333 MB for the five (v1.37.2, amd64).
//
// The version of k8s.io/kubernetes is pinned by go.mod; the builder (builder/src/components)
// checks it against the profile and stamps it with -ldflags, as upstream's release build does.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as each upstream main registers it
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as each upstream main registers them
	_ "k8s.io/component-base/metrics/prometheus/version"  // the build-info metric, as each upstream main registers it
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	_ "time/tzdata" // CronJob time zones on a root filesystem without zoneinfo, as upstream kube-apiserver and kube-controller-manager embed it
)

// programs maps each program name to the constructor of its upstream command.
var programs = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-proxy":              proxy.NewProxyCommand,
}

func main() {
	if newCommand, ok := programs[filepath.Base(os.Args[0])]; ok {
		os.Exit(cli.Run(newCommand()))
	}
	if len(os.Args) > 1 {
		if newCommand, ok := programs[os.Args[1]]; ok {
			command := newCommand()
			command.SetArgs(os.Args[2:])
			os.Exit(cli.Run(command))
		}
	}
	names := make([]string, 0, len(programs))
	for name := range programs {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s PROGRAM [flags], or call it through a link named after PROGRAM\nPROGRAM is one of: %v\n", filepath.Base(os.Args[0]), names)
	os.Exit(2)
}
