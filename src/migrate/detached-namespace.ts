/**
 * The mount namespace a detached process is restored into: a new private copy of the
 * target's, without any LazyFS mount (its copies would keep those FUSE connections alive, the
 * migration's own included, after their daemons unmount), and with each directory LazyFS
 * served bind-mounted from the plain tree (`<root><dir>` over `<dir>`).
 */
export function detachedNamespacePrefix(root: string, binds: readonly string[]): string[] {
  const script = [
    "root=$1; shift",
    // Every LazyFS mount copied into the new namespace goes (lazily: nothing here uses them).
    "umount -a -l -t fuse.lazyfs 2>/dev/null",
    'while [ "$1" != -- ]; do mount --bind "$root$1" "$1" || exit 111; shift; done; shift',
    'exec "$@"',
  ].join("\n");
  return [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    script,
    "sh",
    root,
    ...binds,
    "--",
  ];
}
