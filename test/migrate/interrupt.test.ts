/**
 * The signals of a drain: each tree's migration has an Interruption of its own (its own dump
 * point) that hears the drain's signal, without adding process listeners per tree.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Interruption, MigrationInterrupted } from "../../src/migrate/index.js";

test("a drain's signal stops the trees before their dump and lets dumped ones finish", () => {
  const listeners = process.listenerCount("SIGINT");
  const drain = Interruption.listen();
  const trees = Array.from({ length: 20 }, () => drain.child());
  assert.equal(process.listenerCount("SIGINT"), listeners + 1, "one listener for the whole drain");
  trees[0]!.commit(); // this tree's dump started
  process.emit("SIGINT", "SIGINT");
  assert.doesNotThrow(() => trees[0]!.check("origin"), "a dumped tree finishes");
  for (const t of trees.slice(1)) {
    assert.throws(() => t.check("origin"), MigrationInterrupted);
  }
  const late = drain.child();
  assert.equal(late.signal, "SIGINT", "a tree started after the signal knows it");
  for (const t of [...trees, late]) t.close();
  drain.close();
  assert.equal(process.listenerCount("SIGINT"), listeners);
});
