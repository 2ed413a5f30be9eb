// Command coredns is CoreDNS with only the plugins a testbed cluster's DNS
// needs: it answers for cluster.local from the Kubernetes API and forwards
// nothing, so pods never reach the host's resolver. Importing just these
// plugins also keeps the cloud providers' SDKs out of the build.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

// directives is the order in which the plugins run, a subsequence of
// upstream's plugin.cfg (core/dnsserver/zdirectives.go); `prometheus` is the
// directive of the metrics plugin.
var directives = []string{
	"reload",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"template",
	"kubernetes",
}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
