// `npm run generate`: writes the files derived from core/schema.ts, core/errors.ts and
// core/config-schema.ts (src/api/openapi.json, the tables of docs/errors.md and
// docs/configuration.md). test/unit/api-contract.test.ts fails
// when the committed files differ from what this writes.
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { openApiText, withErrorsTable } from "./openapi.js";
import { withConfigTable } from "../core/config-doc.js";

export const GENERATE_COMMAND = "npm run generate";

export interface GeneratedFile {
  /** Relative to the repository root. */
  path: string;
  /** What the file must contain. */
  expected: string;
}

/** The repository root, from src/api (sources) or dist/src/api (compiled). */
export function repositoryRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, "package.json"))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("no package.json above the generator");
    dir = parent;
  }
  return dir;
}

export function generatedFiles(root = repositoryRoot()): GeneratedFile[] {
  const errorsDoc = "docs/errors.md";
  const configDoc = "docs/configuration.md";
  return [
    { path: "src/api/openapi.json", expected: openApiText() },
    { path: errorsDoc, expected: withErrorsTable(fs.readFileSync(path.join(root, errorsDoc), "utf8")) },
    { path: configDoc, expected: withConfigTable(fs.readFileSync(path.join(root, configDoc), "utf8")) },
  ];
}

/** The generated files whose committed text differs from what the generator makes. */
export function staleFiles(root = repositoryRoot()): string[] {
  return generatedFiles(root)
    .filter((file) => {
      const target = path.join(root, file.path);
      return !fs.existsSync(target) || fs.readFileSync(target, "utf8") !== file.expected;
    })
    .map((file) => file.path);
}

if (path.resolve(process.argv[1] ?? "") === fileURLToPath(import.meta.url)) {
  const root = repositoryRoot();
  for (const file of generatedFiles(root)) {
    const target = path.join(root, file.path);
    const current = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : null;
    if (current === file.expected) continue;
    fs.writeFileSync(target, file.expected);
    process.stdout.write(`wrote ${file.path}\n`);
  }
}
