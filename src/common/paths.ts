/**
 * Names and paths that come from outside (a dump's images, an origin's listings) checked or
 * normalised before anything is looked up, created or written with them.
 */
import { posix } from "node:path";

/**
 * Why `name` is not one plain path component (empty, `.`, `..`, a `/`, NUL or any other
 * control character), or undefined when it is one.
 */
export function componentProblem(name: string): string | undefined {
  if (name === "") return "an empty name";
  if (name === "." || name === "..") return `the name ${name}`;
  if (name.includes("/")) return "a name with a /";
  if (/[\p{Cc}]/u.test(name)) return "a name with a control character";
  return undefined;
}

/**
 * Whether `name` can be a directory entry of a mirrored directory: one component, not `.`/`..`,
 * no NUL (control characters are legal in Linux file names and are kept; they are escaped
 * wherever a name is printed).
 */
export function isEntryName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !/[/\0]/.test(name);
}

/**
 * An absolute path with `.` and `..` components and repeated or trailing slashes resolved
 * lexically, so that `..` can never climb above `/` (`/a/x/../../../etc` -> `/etc`). Relative
 * paths (not file system paths in a dump: `pipe:[1]`, ...) are returned unchanged.
 */
export function normalizeAbsolute(path: string): string {
  if (!path.startsWith("/")) return path;
  const n = posix.normalize(path);
  return n.length > 1 ? n.replace(/\/+$/, "") : n;
}

/** Is `path` the directory `dir` or inside it? */
export function isUnder(path: string, dir: string): boolean {
  return dir === "/" || path === dir || path.startsWith(`${dir}/`);
}
