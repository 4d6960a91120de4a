#!/usr/bin/env node
import { Command } from "commander";
import { UserError } from "../common/errors.js";

const program = new Command();
program
  .name("lazyfs")
  .description("Migrate a running Linux process with CRIU; its files follow it on reference")
  .version("0.1.0");

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof UserError) {
    process.stderr.write(`lazyfs: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  throw err;
}
