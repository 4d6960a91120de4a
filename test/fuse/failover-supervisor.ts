/**
 * A supervisor as a process of its own, for the test of a supervisor's death: it mounts at
 * argv[2] and supervises failover-server.js, or, started by a server whose supervisor died
 * (FUSE_ADOPT), adopts that connection. Each state change is written to FAILOVER_SUP_STATE as
 * JSON ({pid, servingPid, restarts}); SIGTERM stops it (the server unmounts).
 */
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { adoptedDevice, Supervisor, type SupervisorOptions } from "../../src/fuse/index.js";

export const SUPERVISOR = fileURLToPath(import.meta.url);
const SERVER = fileURLToPath(new URL("./failover-server.js", import.meta.url));

if (process.argv[1] === SUPERVISOR) {
  const stateFile = process.env.FAILOVER_SUP_STATE ?? "";
  const opts: SupervisorOptions = {
    mountpoint: process.argv[2] ?? "",
    mount: { subtype: "failovertest" },
    command: process.execPath,
    args: [SERVER],
    env: { ...process.env, FAILOVER_SUPERVISOR: SUPERVISOR },
    onState: (st) => {
      const tmp = `${stateFile}.${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify({ pid: process.pid, ...st }));
      fs.renameSync(tmp, stateFile);
    },
  };
  const adoption = adoptedDevice();
  const s = adoption ? Supervisor.adopt(opts, adoption) : await Supervisor.start(opts);
  process.on("SIGTERM", () => void s.stop());
  const end = await s.done;
  process.exit(end.kind === "unmounted" ? 0 : 1);
}
