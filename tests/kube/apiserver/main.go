// Command meshrelay-testenv is the real kube-apiserver and etcd in one binary, built from Go modules, so the
// Kubernetes tests run against the same code a cluster runs (the way controller-runtime's envtest does) without
// Docker or downloaded release binaries.
//
//	meshrelay-testenv apiserver <kube-apiserver flags>
//	meshrelay-testenv etcd <etcd flags>
//	meshrelay-testenv version
package main

import (
	"fmt"
	"os"
	"time"
	_ "time/tzdata" // kube-apiserver's own main imports it for CronJob time zones.

	etcdversion "go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/component-base/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	sub, rest := os.Args[1], os.Args[2:]
	if sub == "apiserver" || sub == "etcd" {
		go exitWithParent()
	}
	switch sub {
	case "apiserver":
		// NewAPIServerCommand installs the process signal handler, which may happen only once per process, so
		// the command is built only for this mode.
		cmd := app.NewAPIServerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "etcd":
		// etcdmain reads args[0] as the program name, like os.Args.
		etcdmain.Main(append([]string{"etcd"}, rest...))
	case "version":
		fmt.Printf("kube-apiserver %s\netcd %s\n", version.Get().GitVersion, etcdversion.Version)
	default:
		usage()
	}
}

// exitWithParent ends the process when the process that started it is gone (it is re-parented, so the
// parent pid changes). A test run that is killed cannot stop its servers; without this they would keep
// running and holding memory on a shared machine. Polling is used rather than PR_SET_PDEATHSIG, which
// fires when the spawning *thread* exits and Deno spawns from pool threads that come and go.
func exitWithParent() {
	parent := os.Getppid()
	for range time.Tick(time.Second) {
		if os.Getppid() != parent {
			fmt.Fprintf(os.Stderr, "meshrelay-testenv: parent process %d is gone, exiting\n", parent)
			os.Exit(3)
		}
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: meshrelay-testenv apiserver|etcd|version [flags]")
	os.Exit(2)
}
