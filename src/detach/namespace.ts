/**
 * The mount namespace a detached process is restored into: a new private copy of the
 * target's, without any LazyFS mount (its copies would keep those FUSE connections alive, the
 * migration's own included, after their daemons unmount), and with each directory LazyFS
 * served bind-mounted from the plain tree (`<root><dir>` over `<dir>`).
 */
import { bindNamespacePrefix } from "../migration/index.js";

export function detachedNamespacePrefix(root: string, binds: readonly string[]): string[] {
  return bindNamespacePrefix(root, binds, "umount -a -l -t fuse.lazyfs 2>/dev/null");
}
