/**
 * Text from dump paths, origin listings and error messages made safe for a terminal or a log
 * line: every control character and other non-printable code point (C0/C1 controls, DEL,
 * format characters such as bidi overrides, line/paragraph separators, lone surrogates,
 * private use) is escaped as in C strings (`\n`, `\t`, `\r`, `\xNN`, `\u{NNNN}`), and
 * backslashes are doubled so that an escape cannot be forged. The one function every message
 * that leaves LazyFS goes through (the CLI's error line, the logger, tables).
 */
const NON_PRINTABLE = /[\\\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}]/gu;
const NAMED: Record<string, string> = { "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r" };

export function printable(text: string): string {
  return text.replace(NON_PRINTABLE, (c) => {
    const named = NAMED[c];
    if (named) return named;
    const code = c.codePointAt(0)!;
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
  });
}
