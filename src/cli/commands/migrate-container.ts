import { migrateContainer } from "../../container/index.js";
import { type CommonOpts, commonRequest } from "../options.js";
import { printJson } from "../table.js";
import { formatBytes, formatMs } from "../units.js";

interface ContainerOpts extends CommonOpts {
  from: string;
  originCriu?: string;
  json?: boolean;
}

/** `lazyfs migrate --container NAME|ID --from DEST`: the container runs here, lazily. */
export async function migrateContainerCommand(container: string, o: ContainerOpts): Promise<void> {
  const r = await migrateContainer({
    container,
    from: o.from,
    ...commonRequest(o),
    ...(o.originCriu ? { originCriu: o.originCriu } : {}),
  });
  if (o.json) {
    printJson(r);
    return;
  }
  process.stdout.write(
    `checkpoint ${formatMs(r.checkpointMs)}, archive ${formatBytes(r.archiveBytes)} pulled in ${formatMs(r.pullMs)}, restore ${formatMs(r.restoreMs)}\n` +
      `migrated: container ${r.name} (${r.containerId.slice(0, 12)}) runs here as migration ${r.id}; its image ${r.imageId.slice(0, 12)} and volumes are served lazily under ${r.mountpoint}\n` +
      `podman here sees its image only with --storage-opt ${r.storageOpt}\n`,
  );
}
