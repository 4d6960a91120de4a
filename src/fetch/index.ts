/**
 * Fetch scheduler and engine: the library the LazyFS file system and the migration command use.
 * See engine.ts for the API; policies are chosen per path with resolvePolicy(path, rules).
 */

export type { FileMeta, Policy } from "../store/store.js";
export {
  type ByteSource,
  type Crawler,
  type CrawlProgress,
  Engine,
  type EngineOptions,
  type EngineStatus,
  type FileCounters,
  type FileStatus,
  type PrefetchMode,
  type SourceCounters,
  type SummedField,
} from "./engine.js";
export { globToRegExp, matchGlob, type PolicyRule, resolvePolicy } from "./policy.js";
export { RateLimiter } from "./ratelimit.js";
export { sameMtime } from "./types.js";
