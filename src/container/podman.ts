import { shq } from "../common/shell.js";

/**
 * A directory holding only a `criu` that runs LazyFS's CRIU (scripts/setup.sh writes it):
 * podman finds CRIU on PATH and passes PATH on to runc and conmon, so putting this first on
 * PATH makes podman use CRIU >= 4.2 instead of whatever else is installed.
 */
export const PODMAN_CRIU_DIR = process.env.LAZYFS_PODMAN_BIN ?? "/opt/lazyfs/podman-bin";

/**
 * A shell command running podman with `criuDir` first on PATH and runc as the runtime
 * (Debian's crun cannot checkpoint). `args` are quoted here.
 */
export function podmanCommand(args: readonly string[], criuDir = PODMAN_CRIU_DIR): string {
  return `PATH=${shq(criuDir)}:"$PATH" podman --runtime runc ${args.map(shq).join(" ")}`;
}
