//go:build tools

// Package tools pins Prometheus, the metrics store of `tandem viz install`.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
