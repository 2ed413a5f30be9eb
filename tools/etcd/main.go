// Command etcd runs etcd's own main; etcd's module has replace lines, so
// `go install` of it fails and this wrapper is the way to build it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
