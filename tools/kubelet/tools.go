//go:build tools

// Package tools pins the Kubernetes node commands that the testbed builds:
// the kubelet and kube-proxy, from the same release as the control plane.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
