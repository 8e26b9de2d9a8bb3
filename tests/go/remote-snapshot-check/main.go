// remote-snapshot-check drives the remote-snapshot protocol through a real
// containerd, as containerd's pull unpacker (unpacker.go) does for each layer
// of an image: Prepare with the label containerd.io/snapshot.ref=<chain id>;
// on AlreadyExists the layer is there without unpacking, and Stat(<chain id>)
// must find it (containerd's metadata layer links it by a Walk with the
// filter labels."containerd.io/snapshot.ref"==<chain id>,parent==<parent>).
// Then an ordinary active snapshot on top of the lazily pulled layers.
//
//	remote-snapshot-check -address SOCK -namespace NS -snapshotter NAME
//
// It prints one line per step and exits 1 at the first failure. Test tooling
// for snapledger (tests/integration/remote_test.sh); never part of the daemon.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "remote-snapshot-check: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	address := flag.String("address", "", "containerd's socket")
	ns := flag.String("namespace", "default", "containerd namespace")
	name := flag.String("snapshotter", "snapledger", "snapshotter to use")
	flag.Parse()
	client, err := containerd.New(*address)
	if err != nil {
		fail("connect: %v", err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), *ns)
	// A lease, as the unpacker holds one: containerd's garbage collector
	// would otherwise remove the unreferenced layers between the steps. It
	// outlives the program (expiry), so the caller can inspect the result.
	ctx, _, err = client.WithLease(ctx, leases.WithExpiration(time.Hour))
	if err != nil {
		fail("lease: %v", err)
	}
	sn := client.SnapshotService(*name)

	chain := []string{"sha256:remote-check-layer-1", "sha256:remote-check-layer-2"}
	parent := ""
	for i, id := range chain {
		labels := map[string]string{
			"containerd.io/snapshot.ref":              id,
			"containerd.io/snapshot/remote-check/idx": fmt.Sprint(i),
		}
		key := fmt.Sprintf("extract-%d %s", i, id)
		_, err := sn.Prepare(ctx, key, parent, snapshots.WithLabels(labels))
		if !errdefs.IsAlreadyExists(err) {
			fail("layer %d: Prepare with the ref label: want AlreadyExists, got %v", i, err)
		}
		info, err := sn.Stat(ctx, id)
		if err != nil {
			fail("layer %d: Stat(%s) after AlreadyExists: %v", i, id, err)
		}
		if info.Kind != snapshots.KindCommitted || info.Parent != parent {
			fail("layer %d: %s is %v on %q, want committed on %q", i, id, info.Kind, info.Parent, parent)
		}
		if _, err := sn.Stat(ctx, key); !errdefs.IsNotFound(err) {
			fail("layer %d: the extract key %q should not exist: %v", i, key, err)
		}
		fmt.Printf("layer %d: lazily available as %s (committed, parent %q)\n", i, id, parent)
		parent = id
	}
	// A second unpack of the top layer (another image sharing it): no new
	// snapshot, AlreadyExists again.
	_, err = sn.Prepare(ctx, "extract-again "+chain[1], chain[0],
		snapshots.WithLabels(map[string]string{"containerd.io/snapshot.ref": chain[1]}))
	if !errdefs.IsAlreadyExists(err) {
		fail("second unpack of %s: want AlreadyExists, got %v", chain[1], err)
	}
	fmt.Println("second unpack of the top layer: AlreadyExists")

	mounts, err := sn.Prepare(ctx, "rootfs", parent)
	if err != nil || len(mounts) == 0 {
		fail("ordinary Prepare on the lazy layers: %v (%d mounts)", err, len(mounts))
	}
	fmt.Printf("rootfs on top: %s mount\n", mounts[0].Type)
	var n int
	if err := sn.Walk(ctx, func(context.Context, snapshots.Info) error { n++; return nil }); err != nil {
		fail("walk: %v", err)
	}
	if n != 3 {
		fail("walk: %d snapshots, want 3 (2 layers, rootfs)", n)
	}
	fmt.Println("containerd lists 3 snapshots")
}
