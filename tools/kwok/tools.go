//go:build tools

// Package tools pins kwok, the fake-node agent of the testbed.
package tools

import _ "sigs.k8s.io/kwok/pkg/kwok/cmd"
