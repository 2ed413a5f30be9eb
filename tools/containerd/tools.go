//go:build tools

// Package tools pins containerd, the node's container runtime: the daemon,
// its runc shim and ctr (which imports the testbed's images).
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
