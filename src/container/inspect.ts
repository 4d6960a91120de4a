import { UserError } from "../common/errors.js";

/** A container mount LazyFS serves lazily: a named volume's data or a bind-mounted directory. */
export interface ContainerMount {
  /** The directory on the origin. */
  source: string;
  /** Where the container sees it. */
  destination: string;
  type: "volume" | "bind";
}

/** What the migration needs to know of a container on the origin. */
export interface ContainerInfo {
  id: string;
  name: string;
  imageId: string;
  running: boolean;
  mounts: ContainerMount[];
}

interface InspectJson {
  Id?: string;
  Name?: string;
  Image?: string;
  State?: { Running?: boolean };
  Mounts?: { Type?: string; Source?: string; Destination?: string }[];
}

/** Parses `podman container inspect` output (a JSON array of one container). */
export function parseContainerInspect(host: string, ref: string, text: string): ContainerInfo {
  let list: InspectJson[];
  try {
    list = JSON.parse(text) as InspectJson[];
  } catch {
    throw new UserError(`${host}: podman container inspect ${ref} did not print JSON`);
  }
  const c = Array.isArray(list) ? list[0] : undefined;
  if (!c?.Id || !c.Image) throw new UserError(`${host}: no container ${ref}`);
  const mounts: ContainerMount[] = [];
  for (const m of c.Mounts ?? []) {
    if ((m.Type !== "volume" && m.Type !== "bind") || !m.Source || !m.Destination) continue;
    mounts.push({ source: m.Source, destination: m.Destination, type: m.Type });
  }
  return {
    id: c.Id,
    name: (c.Name ?? c.Id).replace(/^\//, ""),
    imageId: c.Image,
    running: c.State?.Running === true,
    mounts,
  };
}

/** Parses `podman info --format json`: where the image store is, and that it is overlay. */
export function parseStoreInfo(host: string, text: string): { graphRoot: string } {
  let info: { store?: { graphRoot?: string; graphDriverName?: string } };
  try {
    info = JSON.parse(text);
  } catch {
    throw new UserError(`${host}: podman info did not print JSON`);
  }
  const store = info.store;
  if (!store?.graphRoot) throw new UserError(`${host}: podman info names no storage root`);
  if (store.graphDriverName !== "overlay") {
    throw new UserError(
      `${host}: podman stores images with ${store.graphDriverName ?? "an unknown driver"}; lazy containers need overlay`,
    );
  }
  return { graphRoot: store.graphRoot };
}
