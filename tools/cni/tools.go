//go:build tools

// Package tools pins the CNI plugins that give the node's pods their network:
// bridge with host-local IPAM, loopback, and portmap for hostPorts.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
