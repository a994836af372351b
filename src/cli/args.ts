// The sub-commands' flags, parsed by node:util parseArgs in strict mode: an unknown or
// malformed flag is a ConfigError (one line, exit 2) followed by the command's usage.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError } from "../daemon/config.js";

type Flags = NonNullable<ParseArgsConfig["options"]>;

export function parseFlags<const O extends Flags, const P extends boolean = false>(
  argv: string[],
  options: O,
  usage: string,
  allowPositionals?: P,
): ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: P }>> {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: (allowPositionals ?? false) as P });
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n${usage}`);
  }
}
