/**
 * Per-path policy rules. Globs: `*` any run of characters except `/`, `**` any run including
 * `/` (`/**\/` also matches a single `/`), `?` one character except `/`, `[abc]`/`[!a-z]`
 * classes, `{a,b}` alternatives. A glob without `/` matches the basename anywhere.
 * The first matching rule wins; no match is `lazy`.
 */
import { UserError } from "../common/errors.js";
import { POLICIES, type Policy } from "../store/store.js";

export interface PolicyRule {
  glob: string;
  policy: Policy;
}

export function globToRegExp(glob: string): RegExp {
  let re = "";
  let depth = 0;
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*") {
      if (glob[i + 1] === "*") {
        i++;
        if (glob[i + 1] === "/") {
          i++;
          re += "(?:.*/)?";
        } else re += ".*";
      } else re += "[^/]*";
    } else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) throw new UserError(`policy glob ${glob}: unclosed [`);
      let body = glob.slice(i + 1, end);
      if (body.startsWith("!")) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\/g, "\\\\")}]`;
      i = end;
    } else if (c === "{") {
      depth++;
      re += "(?:";
    } else if (c === "}" && depth > 0) {
      depth--;
      re += ")";
    } else if (c === "," && depth > 0) re += "|";
    else re += c.replace(/[.+^$()|\\/]/g, "\\$&");
  }
  if (depth > 0) throw new UserError(`policy glob ${glob}: unclosed {`);
  return new RegExp(`^${re}$`);
}

const cache = new Map<string, RegExp>();

export function matchGlob(path: string, glob: string): boolean {
  let re = cache.get(glob);
  if (!re) {
    re = globToRegExp(glob);
    cache.set(glob, re);
  }
  if (!glob.includes("/")) return re.test(path.slice(path.lastIndexOf("/") + 1));
  return re.test(path);
}

export function resolvePolicy(path: string, rules: readonly PolicyRule[]): Policy {
  for (const r of rules) {
    if (!POLICIES.includes(r.policy)) {
      throw new UserError(
        `policy rule ${r.glob}: unknown policy ${r.policy} (one of ${POLICIES.join(", ")})`,
      );
    }
    if (matchGlob(path, r.glob)) return r.policy;
  }
  return "lazy";
}
