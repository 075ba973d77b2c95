/**
 * The bundle's entry (dist/index.js): `run(command)` for the action entries and
 * `cli(argv)` for the `lifeboat` command. Both exit the process when done, so that idle
 * keep-alive sockets of the cloud SDKs cannot hold a finished step open.
 */
import { runAction } from './action/github.ts';
import { runCli } from './cli/cli.ts';

function exitAfterFlush(code: number): void {
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

export async function run(command?: string): Promise<void> {
  exitAfterFlush(await runAction(command));
}

export async function cli(argv: string[]): Promise<void> {
  const code = await runCli(argv, {
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    env: process.env,
  });
  exitAfterFlush(code);
}
