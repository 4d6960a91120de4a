/**
 * A CRIU >= 4.2 on the origin host, which needs nothing but sshd:
 *
 * 1. `--origin-criu PATH` (explicit): that one, or one line saying why not.
 * 2. Otherwise one probe over SSH: $LAZYFS_CRIU, /opt/lazyfs/criu/bin/criu, `criu` on PATH,
 *    then bundles pushed earlier (/var/lib/lazyfs/criu/<sha256>/); the first >= 4.2 wins.
 * 3. Otherwise this host's own CRIU, packed as a self-contained bundle (criu/bundle.ts), is
 *    uploaded over SFTP, unpacked into a temporary sibling of its final directory, checked
 *    (`--version`, `criu check`) and only then renamed into place: a half-done push is never
 *    used, and the next call finds it and uploads nothing.
 *
 * /var/lib/lazyfs and /var/lib/lazyfs/criu on the origin must be root-owned, not group- or
 * world-writable and not symlinks: programs in them run as root.
 */
import { UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { shq } from "../common/shell.js";
import {
  CRIU_ENV,
  type CriuBundle,
  compareVersions,
  criuVersionProblem,
  locateCriu,
  MIN_CRIU_VERSION,
  PRIVATE_CRIU,
  packCriuBundle,
} from "../criu/index.js";
import type { SftpOrigin } from "../origin/index.js";

const log = logger("migrate/origin-criu");

/** Root-only directories on the origin; pushed bundles live in ORIGIN_BUNDLES/<sha256>/. */
export const ORIGIN_STATE = "/var/lib/lazyfs";
export const ORIGIN_BUNDLES = `${ORIGIN_STATE}/criu`;

export interface OriginCriu {
  path: string;
  version: string;
  source: "explicit" | "origin" | "pushed" | "cached";
  /** bytes uploaded for this call (0 unless pushed) */
  pushedBytes: number;
  /** nft next to it when the bundle has one, else undefined */
  nftPath?: string;
}

export interface EnsureOriginCriuOptions {
  /** The user's `--origin-criu`: used alone. */
  explicit?: string;
  /** This host's CRIU to push when the origin has none; default as `locateCriu` finds it. */
  localCriu?: string;
  /** Where packed bundles are cached here; default /var/lib/lazyfs/bundles. */
  localCacheDir?: string;
}

/**
 * Shell functions shared by the scripts below. `probe KIND PATH` prints one line
 * `found KIND PATH VERSION NFT` (VERSION empty when `--version` says none, NFT the nft next
 * to it or empty) or `missing KIND PATH`; `unsafe DIR` prints why DIR may not hold programs.
 */
const FUNCTIONS = `
T=$(printf '\\t')
probe() {
  if [ -n "$2" ] && [ -f "$2" ] && [ -x "$2" ]; then
    v=$("$2" --version 2>/dev/null | sed -n 's/^Version: *\\([0-9][0-9.]*\\).*/\\1/p' | head -n 1)
    n="\${2%/*}/nft"; [ -f "$n" ] && [ -x "$n" ] || n=
    printf 'found%s%s%s%s%s%s%s%s\\n' "$T" "$1" "$T" "$2" "$T" "$v" "$T" "$n"
  else
    printf 'missing%s%s%s%s\\n' "$T" "$1" "$T" "$2"
  fi
}
unsafe() {
  if [ -L "$1" ]; then echo "is a symlink"
  elif [ ! -d "$1" ]; then echo "is not a directory"
  else
    set -- $(stat -c '%u %a' "$1")
    if [ "$1" != 0 ]; then echo "is owned by uid $1, not root"
    elif [ $((0$2 & 022)) != 0 ]; then echo "is group- or world-writable (mode $2)"
    fi
  fi
}
`;

interface Candidate {
  kind: string;
  path: string;
  /** undefined: not found or not executable; "": ran but printed no version. */
  version?: string;
  nft?: string;
}

type ProbeResult = { candidates: Candidate[]; unsafe?: { dir: string; why: string } };

function parseProbe(stdout: string): ProbeResult {
  const result: ProbeResult = { candidates: [] };
  for (const line of stdout.split("\n")) {
    const [tag, a = "", b = "", c, d] = line.split("\t");
    if (tag === "found")
      result.candidates.push({ kind: a, path: b, version: c ?? "", nft: d || undefined });
    else if (tag === "missing") result.candidates.push({ kind: a, path: b });
    else if (tag === "unsafe") result.unsafe ??= { dir: a, why: b };
  }
  return result;
}

async function runScript(
  origin: SftpOrigin,
  script: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return origin.exec(`sh -c ${shq(`${FUNCTIONS}\n${script}`)}`);
}

/**
 * Shell lines that check the bundle directories and exit 3 at the first unsafe one; a missing
 * one is created (mode 0700) when `create`, else ends the check (exit 0).
 */
function checkDirsScript(create: boolean): string {
  return [ORIGIN_STATE, ORIGIN_BUNDLES]
    .map((d) => {
      const q = shq(d);
      const absent = create ? `mkdir -m 700 ${q} || exit 2` : "exit 0";
      return [
        `[ -e ${q} ] || [ -L ${q} ] || ${absent}`,
        `r=$(unsafe ${q}); [ -z "$r" ] || { printf 'unsafe\\t%s\\t%s\\n' ${q} "$r"; exit 3; }`,
      ].join("\n");
    })
    .join("\n");
}

function refuseUnsafe(origin: SftpOrigin, u: { dir: string; why: string }): UserError {
  return new UserError(
    `${origin.name}: refusing ${u.dir}: it ${u.why}; it must be a root-only directory (chown root, chmod 700)`,
  );
}

async function probeOrigin(origin: SftpOrigin): Promise<ProbeResult> {
  const script = [
    `[ -z "\${${CRIU_ENV}:-}" ] || probe env "$${CRIU_ENV}"`,
    `probe prefix ${shq(PRIVATE_CRIU)}`,
    `c=$(command -v criu 2>/dev/null) && probe path "$c"`,
    // Bundles are looked at only when their directories are safe (subshell: exit 0 there
    // ends the directory check, not the probe).
    `(${checkDirsScript(false)}\nfor b in ${shq(ORIGIN_BUNDLES)}/*/bin/criu; do [ -e "$b" ] && probe cached "$b"; done; exit 0)`,
  ].join("\n");
  const r = await runScript(origin, script);
  return parseProbe(r.stdout);
}

function pick(candidates: Candidate[]): Candidate | undefined {
  const usable = candidates.filter((c) => c.version && !criuVersionProblem(c.version));
  const first = usable.find((c) => c.kind !== "cached");
  if (first) return first;
  // Among pushed bundles the newest CRIU.
  return usable.sort((a, b) => compareVersions(b.version!, a.version!))[0];
}

function result(c: Candidate, source: OriginCriu["source"], pushedBytes = 0): OriginCriu {
  return { path: c.path, version: c.version!, source, pushedBytes, nftPath: c.nft };
}

async function explicitCriu(origin: SftpOrigin, path: string): Promise<OriginCriu> {
  const r = await runScript(origin, `probe explicit ${shq(path)}`);
  const c = parseProbe(r.stdout).candidates[0];
  const why =
    !c || c.version === undefined
      ? "not found or not executable"
      : c.version === ""
        ? "`--version` printed no version"
        : criuVersionProblem(c.version);
  if (why) throw new UserError(`${origin.name}: --origin-criu ${path}: ${why}`);
  return result(c!, "explicit");
}

/** CRIU's own error line from `criu check` output. */
function criuErrorLine(output: string): string {
  const lines = output
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.filter((l) => /error/i.test(l)).pop() ?? lines.pop() ?? "no output";
}

/** Uploads `bundle`, unpacks it next to its final place, checks it and renames it in. */
async function pushBundle(origin: SftpOrigin, bundle: CriuBundle): Promise<OriginCriu> {
  const final = `${ORIGIN_BUNDLES}/${bundle.hash}`;
  const prep = await runScript(
    origin,
    `umask 077\n${checkDirsScript(true)}\n` +
      `[ ! -x ${shq(`${final}/bin/criu`)} ] || { echo exists; exit 0; }\n` +
      `mktemp -d ${shq(`${ORIGIN_BUNDLES}/.incoming-${bundle.hash.slice(0, 16)}.XXXXXX`)}`,
  );
  const probed = parseProbe(prep.stdout);
  if (probed.unsafe) throw refuseUnsafe(origin, probed.unsafe);
  if (prep.code !== 0) {
    throw new UserError(
      `${origin.name}: cannot create ${ORIGIN_BUNDLES}: ${(prep.stderr || prep.stdout).trim().split("\n").pop()}`,
    );
  }
  const tmp = prep.stdout.trim();
  let pushedBytes = 0;
  if (tmp !== "exists") {
    pushedBytes = await origin.upload(bundle.tarball, `${tmp}/bundle.tar.gz`, { mode: 0o600 });
  }
  const dir = tmp === "exists" ? final : `${tmp}/b`;
  const unpack =
    tmp === "exists"
      ? ""
      : `mkdir ${shq(dir)} && tar -xzf ${shq(`${tmp}/bundle.tar.gz`)} -C ${shq(dir)} && rm -f ${shq(`${tmp}/bundle.tar.gz`)} || exit 2\n`;
  const check = await runScript(
    origin,
    `${unpack}probe pushed ${shq(`${dir}/bin/criu`)}\n` +
      `out=$(${shq(`${dir}/bin/criu`)} check 2>&1) && exit 0; printf '%s\\n' "$out" >&2; exit 4`,
  );
  const cleanup = () => (tmp === "exists" ? Promise.resolve() : origin.exec(`rm -rf ${shq(tmp)}`));
  const found = parseProbe(check.stdout).candidates[0];
  const problem =
    check.code === 2 || !found?.version
      ? `cannot unpack or run the pushed CRIU in ${dir}: ${criuErrorLine(check.stderr)}`
      : (criuVersionProblem(found.version) ??
        (check.code !== 0 ? `criu check failed: ${criuErrorLine(check.stderr)}` : undefined));
  if (problem) {
    await cleanup();
    throw new UserError(`${origin.name}: pushed CRIU ${bundle.version}: ${problem}`);
  }
  if (tmp !== "exists") {
    // Another push of the same bundle may have won the rename: then its copy is as good.
    const mv = await origin.exec(
      `mv -T ${shq(dir)} ${shq(final)} 2>/dev/null || [ -x ${shq(`${final}/bin/criu`)} ]; s=$?; rm -rf ${shq(tmp)}; exit $s`,
    );
    if (mv.code !== 0)
      throw new UserError(`${origin.name}: cannot move the pushed CRIU to ${final}`);
  }
  return {
    path: `${final}/bin/criu`,
    version: found!.version!,
    source: "pushed",
    pushedBytes,
    nftPath: found!.nft ? `${final}/bin/nft` : undefined,
  };
}

/** Finds, or pushes, a CRIU >= 4.2 on `origin` (see the file comment). */
export async function ensureOriginCriu(
  origin: SftpOrigin,
  opts: EnsureOriginCriuOptions,
): Promise<OriginCriu> {
  const started = Date.now();
  const done = (c: OriginCriu): OriginCriu => {
    log.info("origin CRIU", { host: origin.name, ...c, ms: Date.now() - started });
    return c;
  };
  if (opts.explicit) return done(await explicitCriu(origin, opts.explicit));
  const probed = await probeOrigin(origin);
  const chosen = pick(probed.candidates);
  if (chosen) return done(result(chosen, chosen.kind === "cached" ? "cached" : "origin"));
  if (probed.unsafe) throw refuseUnsafe(origin, probed.unsafe);
  const tried = probed.candidates
    .map((c) => `${c.path}: ${c.version === undefined ? "missing" : c.version || "no version"}`)
    .join(", ");
  const local = await locateCriu({ criuPath: opts.localCriu });
  log.info(`no CRIU >= ${MIN_CRIU_VERSION} on the origin; pushing this host's`, {
    host: origin.name,
    tried,
    local: local.path,
  });
  const bundle = await packCriuBundle(local.path, { cacheDir: opts.localCacheDir });
  log.info("pushing CRIU bundle", {
    host: origin.name,
    from: bundle.from,
    hash: bundle.hash,
    bytes: bundle.bytes,
    dir: `${ORIGIN_BUNDLES}/${bundle.hash}`,
  });
  return done(await pushBundle(origin, bundle));
}
