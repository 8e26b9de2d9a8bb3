// snapshotter-serve serves one of containerd's own snapshotters (native or
// overlayfs) with containerd's Snapshots gRPC API on a unix socket, the way
// a containerd proxy_plugins entry expects it.
//
// It is test tooling for snapledger: a downstream snapshotter nobody here
// wrote, and the "plain Go proxy" baseline for benchmarks. It is never part
// of the daemon.
//
//	snapshotter-serve -type native|overlayfs -root DIR -address SOCK [-remote-snapshots]
//
// With -remote-snapshots it is a test double of a remote snapshotter
// (stargz): a Prepare carrying the label containerd.io/snapshot.ref commits
// the new snapshot at once under the label's value and answers
// AlreadyExists, as stargz does for a layer it can mount lazily. The layer
// is empty (nothing is fetched): enough for the protocol, not for running a
// container on it.
//
// The socket appears only once the server accepts calls: it listens on a
// temporary name beside SOCK and renames it into place. SIGTERM or SIGINT
// stops it (in-flight calls get a few seconds), closes the snapshotter,
// removes the socket and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/native"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "snapshotter-serve: %v\n", err)
		os.Exit(1)
	}
}

func newSnapshotter(kind, root string, asyncRemove bool) (snapshots.Snapshotter, error) {
	switch kind {
	case "native":
		return native.NewSnapshotter(root)
	case "overlayfs", "overlay":
		var opts []overlay.Opt
		if asyncRemove {
			opts = append(opts, overlay.AsynchronousRemove)
		}
		return overlay.NewSnapshotter(root, opts...)
	default:
		return nil, fmt.Errorf("-type %q: want native or overlayfs", kind)
	}
}

// remoteSnapshots wraps a snapshotter the way stargz answers Prepares for
// layers it can serve remotely (stargz snapshotter's Prepare: commit the key
// under the target named by containerd.io/snapshot.ref, count an existing
// target as success, answer AlreadyExists).
type remoteSnapshots struct {
	snapshots.Snapshotter
}

func (r remoteSnapshots) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	target := base.Labels["containerd.io/snapshot.ref"]
	if target == "" {
		return r.Snapshotter.Prepare(ctx, key, parent, opts...)
	}
	if _, err := r.Snapshotter.Prepare(ctx, key, parent, opts...); err != nil {
		return nil, err
	}
	if err := r.Snapshotter.Commit(ctx, target, key, opts...); err != nil && !errdefs.IsAlreadyExists(err) {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "snapshotter-serve: remote snapshot %s committed as %s\n", key, target)
	return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
}

// logErrors reports every failed call on stderr: the downstream's side of a
// failure the proxy in front of it sees.
func logErrors(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (interface{}, error) {
	resp, err := handler(ctx, req)
	if err != nil && !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		fmt.Fprintf(os.Stderr, "snapshotter-serve: %s: %v\n", info.FullMethod, err)
	}
	return resp, err
}

func run() error {
	kind := flag.String("type", "native", "snapshotter to serve: native or overlayfs")
	root := flag.String("root", "", "snapshotter root directory (created if missing)")
	address := flag.String("address", "", "unix socket to serve the Snapshots API on")
	asyncRemove := flag.Bool("async-remove", false, "overlayfs: remove directories in Cleanup, not in Remove")
	stopTimeout := flag.Duration("stop-timeout", 10*time.Second, "on SIGTERM, how long in-flight calls may take")
	quiet := flag.Bool("quiet", false, "do not log failed calls on stderr")
	remote := flag.Bool("remote-snapshots", false, "answer Prepares labelled containerd.io/snapshot.ref as stargz does (commit, AlreadyExists)")
	flag.Parse()
	if flag.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *root == "" || *address == "" {
		return errors.New("-root and -address are required")
	}

	// Stop on a signal from now on; a signal during start-up is handled once
	// the server runs (nothing to tear down before).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	if err := os.MkdirAll(*root, 0o700); err != nil {
		return err
	}
	sn, err := newSnapshotter(*kind, *root, *asyncRemove)
	if err != nil {
		return err
	}
	defer sn.Close()
	if *remote {
		sn = remoteSnapshots{sn}
	}

	if err := os.MkdirAll(filepath.Dir(*address), 0o755); err != nil {
		return err
	}
	// A socket left by a previous run is replaced, anything else is an error.
	if st, err := os.Lstat(*address); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("%s exists and is not a socket", *address)
		}
		if err := os.Remove(*address); err != nil {
			return err
		}
	}
	tmp := fmt.Sprintf("%s.%d.tmp", *address, os.Getpid())
	_ = os.Remove(tmp)
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return err
	}
	// The listener would unlink tmp on Close; after the rename that name is
	// gone and the real one is removed below.
	l.(*net.UnixListener).SetUnlinkOnClose(false)

	var opts []grpc.ServerOption
	if !*quiet {
		opts = append(opts, grpc.UnaryInterceptor(logErrors))
	}
	srv := grpc.NewServer(opts...)
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	if err := os.Rename(tmp, *address); err != nil {
		srv.Stop()
		_ = os.Remove(tmp)
		return err
	}
	defer os.Remove(*address)
	fmt.Fprintf(os.Stderr, "snapshotter-serve: serving %s snapshotter (root %s) on %s\n", *kind, *root, *address)

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "snapshotter-serve: %v, stopping\n", sig)
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(*stopTimeout):
		fmt.Fprintf(os.Stderr, "snapshotter-serve: calls still running after %v, cutting them off\n", *stopTimeout)
		srv.Stop()
		<-stopped
	}
	return nil
}
