/**
 * A small strict parser of the OpenMetrics text format (the subset LazyFS exposes: counters,
 * gauges, labels, no exemplars), for tests: every sample belongs to a family declared by its
 * `# TYPE` line before it, sample names fit the family's type, label sets are well formed and
 * escaped, values are numbers, and the exposition ends with `# EOF`.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string;
  help?: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf("=", i);
    if (eq < 0) throw new Error(`line ${line}: label without =`);
    const name = text.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`line ${line}: bad label name ${name}`);
    if (name in labels) throw new Error(`line ${line}: label ${name} twice`);
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label value not quoted`);
    let v = "";
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === "\\") {
        const c = text[++j];
        if (c === "n") v += "\n";
        else if (c === "\\" || c === '"') v += c;
        else throw new Error(`line ${line}: bad escape \\${c}`);
      } else v += text[j];
    }
    if (text[j] !== '"') throw new Error(`line ${line}: unterminated label value`);
    labels[name] = v;
    i = j + 1;
    if (i < text.length) {
      if (text[i] !== ",") throw new Error(`line ${line}: expected , between labels`);
      i++;
    }
  }
  return labels;
}

function parseValue(text: string, line: number): number {
  if (text === "+Inf") return Number.POSITIVE_INFINITY;
  if (text === "-Inf") return Number.NEGATIVE_INFINITY;
  if (text === "NaN") return Number.NaN;
  if (!/^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/.test(text)) {
    throw new Error(`line ${line}: bad value ${text}`);
  }
  return Number(text);
}

const SUFFIXES: Record<string, string[]> = {
  counter: ["_total", "_created"],
  gauge: [""],
  unknown: [""],
  info: ["_info"],
  stateset: [""],
};

export function parseOpenMetrics(body: string): Map<string, Family> {
  if (!body.endsWith("# EOF\n") && !body.endsWith("# EOF")) throw new Error("no # EOF at the end");
  const lines = body.replace(/\n$/, "").split("\n");
  if (lines[lines.length - 1] !== "# EOF") throw new Error("# EOF is not the last line");
  const fams = new Map<string, Family>();
  let current: Family | undefined;
  for (let n = 0; n < lines.length - 1; n++) {
    const line = lines[n]!;
    const ln = n + 1;
    if (line === "") throw new Error(`line ${ln}: empty line`);
    if (line.startsWith("#")) {
      const m = /^# (TYPE|HELP|UNIT) (\S+)(?: (.*))?$/.exec(line);
      if (!m) throw new Error(`line ${ln}: bad comment ${line}`);
      const [, kind, name, rest] = m as unknown as [string, string, string, string | undefined];
      if (!NAME.test(name)) throw new Error(`line ${ln}: bad metric name ${name}`);
      let fam = fams.get(name);
      if (!fam) {
        fam = { name, type: "", samples: [] };
        fams.set(name, fam);
      } else if (fam !== current) throw new Error(`line ${ln}: family ${name} interleaved`);
      current = fam;
      if (kind === "TYPE") {
        if (fam.type) throw new Error(`line ${ln}: second TYPE for ${name}`);
        if (!rest || !(rest in SUFFIXES)) throw new Error(`line ${ln}: unknown type ${rest}`);
        fam.type = rest;
      } else if (kind === "HELP") fam.help = rest ?? "";
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (\S+))?$/.exec(line);
    if (!m) throw new Error(`line ${ln}: bad sample ${line}`);
    const [, name, labelText, value] = m as unknown as [string, string, string | undefined, string];
    if (!current?.type) throw new Error(`line ${ln}: sample ${name} before its TYPE`);
    const ok = SUFFIXES[current.type]!.some((s) => name === current!.name + s);
    if (!ok) throw new Error(`line ${ln}: sample ${name} does not belong to ${current.name}`);
    const v = parseValue(value, ln);
    if (current.type === "counter" && !(v >= 0)) throw new Error(`line ${ln}: negative counter`);
    current.samples.push({ name, labels: parseLabels(labelText ?? "", ln), value: v });
  }
  for (const f of fams.values()) if (!f.type) throw new Error(`family ${f.name} has no TYPE`);
  return fams;
}

/**
 * The sum of family `family`'s main samples (`_total` for counters) whose labels include
 * `labels`; undefined when there is none.
 */
export function sampleValue(
  fams: Map<string, Family>,
  family: string,
  labels: Record<string, string>,
): number | undefined {
  const f = fams.get(family);
  if (!f) return undefined;
  const main = f.type === "counter" ? `${family}_total` : family;
  const hits = f.samples.filter(
    (s) => s.name === main && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  return hits.length === 0 ? undefined : hits.reduce((n, s) => n + s.value, 0);
}
