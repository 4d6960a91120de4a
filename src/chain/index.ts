/**
 * Chained migration (A -> B -> C): on the origin's side, whether the process to migrate runs
 * on LazyFS there (source.ts); on the new target's side, an origin that takes every block
 * from where it is, B's store or A (origin.ts).
 * May import: migration/, lazy/ and below. Never migrate/, daemon/ or detach/.
 */
export { openChainOrigin, openServingOrigin, viewPathOn } from "./origin.js";
export { originProcessView } from "./source.js";
