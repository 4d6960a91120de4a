/** JSON-lines files (events, access logs): the complete lines of a file that may not exist. */
import { readFile } from "node:fs/promises";
import { errnoCode, errorMessage, UserError } from "./errors.js";

/**
 * The text of `file` up to its last newline (a line still being written is left out); ""
 * when the file does not exist; a UserError naming the file when it cannot be read.
 */
export async function completeLines(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return "";
    throw new UserError(`${file}: ${errorMessage(err)}`);
  }
  return text.slice(0, text.lastIndexOf("\n") + 1);
}
