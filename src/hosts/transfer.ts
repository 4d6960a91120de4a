/**
 * Copying files from one host to the other over the veth link (so the copy shows in the
 * link counters and obeys its shaping): `tar` on the sender streams through a TCP connection
 * to the receiver's address, where `tar` unpacks it at the same absolute paths.
 */
import { UserError } from "../common/errors.js";
import type { Host } from "./host.js";
import { waitForMarker, watch } from "./run.js";
import { PYTHON } from "./state.js";

const TRANSFER = `
import socket, subprocess, sys, time
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
CHUNK = 1 << 20
n = 0
if mode == "recv":
    srv = socket.create_server((addr, port))
    print("listening", flush=True)
    conn, _ = srv.accept()
    srv.close()
    tar = subprocess.Popen(["tar", "-C", "/", "-xpf", "-"], stdin=subprocess.PIPE)
    while True:
        b = conn.recv(CHUNK)
        if not b:
            break
        n += len(b)
        tar.stdin.write(b)
    tar.stdin.close()
    rc = tar.wait()
else:
    deadline = time.time() + 10
    while True:
        try:
            s = socket.create_connection((addr, port))
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.02)
    paths = [p.lstrip("/") for p in sys.argv[4:]]
    tar = subprocess.Popen(["tar", "-C", "/", "-cf", "-", "--"] + paths, stdout=subprocess.PIPE)
    while True:
        b = tar.stdout.read1(CHUNK)
        if not b:
            break
        n += len(b)
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    rc = tar.wait()
print(n, flush=True)
sys.exit(rc)
`;

export interface TransferResult {
  /** Bytes of the tar stream sent over the link (payload, without TCP/IP overhead). */
  bytes: number;
}

/**
 * Copies `paths` (absolute files or directories inside `from`) to the same paths inside `to`,
 * through the link. Modes and timestamps are kept. No time limit unless `timeoutMs`.
 */
export async function sendFiles(
  from: Host,
  to: Host,
  paths: readonly string[],
  opts: { port?: number; timeoutMs?: number } = {},
): Promise<TransferResult> {
  for (const p of paths) {
    if (!p.startsWith("/")) throw new UserError(`sendFiles: path must be absolute: ${p}`);
  }
  if (paths.length === 0) return { bytes: 0 };
  const port = String(opts.port ?? 20000 + Math.floor(Math.random() * 40000));
  const recv = watch(to.spawn(PYTHON, ["-c", TRANSFER, "recv", to.address, port]));
  try {
    await waitForMarker(recv, "listening", `receiver on ${to.name}`, 10_000);
    const sent = await from.exec(PYTHON, ["-c", TRANSFER, "send", to.address, port, ...paths], {
      timeoutMs: opts.timeoutMs ?? 0, // a shaped link may be slow; no limit unless asked
    });
    const code = await recv.exit;
    if (code !== 0) {
      throw new Error(`receiver on ${to.name} exited with code ${code}: ${recv.stderr().trim()}`);
    }
    return { bytes: Number(sent.stdout.trim()) };
  } finally {
    recv.child.kill("SIGKILL");
  }
}
