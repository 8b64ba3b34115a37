// Command hello is the small workload baked into the appliance image (geminik8s.local/hello, see
// builder/src/images): an HTTP server that answers every request with its host name (the pod's
// name) and how many requests it has answered, and logs one line per request to stdout, so a test
// can tell which pod answered through a Service and read that pod's log through the API.
//
// With -get it is the client instead: one GET, the body on stdout, exit status 1 when it fails, so
// a pod of the same image can reach a Service by its DNS name without any other image.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// version is stamped by the builder (-X main.version): the image tag it came from.
var version = "dev"

type answer struct {
	Hostname string `json:"hostname"`
	Count    uint64 `json:"count"`
	Version  string `json:"version"`
}

func main() {
	listen := flag.String("listen", ":8080", "address to serve on")
	get := flag.String("get", "", "instead of serving, GET this URL once and print the body")
	timeout := flag.Duration("timeout", 10*time.Second, "with -get: how long the request may take")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *get != "" {
		if err := fetch(*get, *timeout); err != nil {
			fmt.Fprintln(os.Stderr, "hello:", err)
			os.Exit(1)
		}
		return
	}
	if err := serve(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func serve(addr string) error {
	hostname, err := os.Hostname()
	if err != nil {
		return err
	}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// The resolved address, so a caller that asked for port 0 learns which one it got.
	fmt.Printf("hello %s on %s listening on %s\n", version, hostname, listener.Addr())
	var count atomic.Uint64
	server := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := count.Add(1)
			fmt.Printf("request %d from %s: %s %s\n", n, r.RemoteAddr, r.Method, r.URL.Path)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(answer{Hostname: hostname, Count: n, Version: version})
		}),
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- server.Serve(listener) }()
	select {
	case err := <-done:
		return err
	case sig := <-stop:
		// A pod being deleted: finish the requests in flight within the grace period, then exit 0.
		fmt.Printf("hello: %s, shutting down\n", sig)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := server.Shutdown(ctx); err != nil {
			return err
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

func fetch(url string, timeout time.Duration) error {
	client := &http.Client{Timeout: timeout}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	os.Stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
