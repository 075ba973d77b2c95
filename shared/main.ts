/**
 * The bundle's entry (dist/index.js): `run(command)` for the action entries and
 * `cli(argv)` for the `lifeboat` command. Both exit the process when done, so that idle
 * keep-alive sockets of the cloud SDKs cannot hold a finished step open.
 */
import { runAction, runPost } from './action/github.ts';
import { runCli } from './cli/cli.ts';

/**
 * A last resort: an error no code path caught (a stream failing after its pipeline was torn
 * down, say) still ends the step with one line saying it was unexpected, and exit status 2.
 */
function reportCrashes(report: (line: string) => void): void {
  const crash = (error: unknown) => {
    report(
      `unexpected failure (a bug or an outage, not your inputs): ${error instanceof Error ? error.message : String(error)}`,
    );
    exitAfterFlush(2);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
}

function exitAfterFlush(code: number): void {
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

export async function run(command?: string): Promise<void> {
  reportCrashes((line) => process.stdout.write(`::error::${line}\n`));
  exitAfterFlush(await runAction(command));
}

/** The `post:` entry: removes what a killed main step left behind (a throwaway server, say). */
export async function post(command?: string): Promise<void> {
  reportCrashes((line) => process.stdout.write(`::error::${line}\n`));
  exitAfterFlush(await runPost(command));
}

export async function cli(argv: string[]): Promise<void> {
  reportCrashes((line) => process.stderr.write(`error: ${line}\n`));
  const code = await runCli(argv, {
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    env: process.env,
  });
  exitAfterFlush(code);
}
