/**
 * runCommand under signals, in process: GitHub's cancel (SIGINT, then SIGTERM) waits for the
 * cleanup; only a second SIGINT exits at once. The command here is the smallest one that
 * cleans up slowly after its signal aborts, so that the second signal lands mid-cleanup.
 */
import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { describeFailure, exitCodeOf, makeReader, runCommand } from '../../shared/action/run.ts';
import { type Command, defineCommand } from '../../shared/action/spec.ts';

function slowCleanup(log: string[]): Command<never> {
  return defineCommand<{ timeoutSeconds: number }>({
    name: 'slow-cleanup',
    description: 'Waits for its signal, then takes 100 ms to clean up.',
    inputs: [],
    outputs: [],
    parse: () => ({ timeoutSeconds: 60 }),
    async execute(_options, { signal }) {
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      log.push('cleanup started');
      await new Promise((resolve) => setTimeout(resolve, 100));
      log.push('cleanup finished');
      throw signal.reason;
    },
  }) as unknown as Command<never>;
}

const logger = (log: string[]) => ({
  info: (m: string) => log.push(m),
  warn: (m: string) => log.push(`warning: ${m}`),
});

test('SIGINT then SIGTERM (how GitHub cancels): the cleanup finishes, and the failure exits 130', async (t) => {
  const exit = mock.method(process, 'exit', () => undefined as never);
  t.after(() => exit.mock.restore());
  const log: string[] = [];
  const command = slowCleanup(log);
  const running = runCommand(
    command,
    makeReader(command, () => undefined),
    logger(log),
  );
  await new Promise((resolve) => setImmediate(resolve));
  process.emit('SIGINT', 'SIGINT');
  await new Promise((resolve) => setTimeout(resolve, 20));
  process.emit('SIGTERM', 'SIGTERM');
  const error = await running.then(
    () => assert.fail('an interrupted command fails'),
    (e: unknown) => e,
  );
  assert.equal(exit.mock.callCount(), 0, 'SIGTERM did not exit');
  assert.deepEqual(log, [
    'cleanup started',
    'warning: SIGTERM received: still removing what slow-cleanup wrote',
    'cleanup finished',
  ]);
  const failure = describeFailure(error);
  assert.deepEqual(failure.lines, [
    'slow-cleanup was interrupted (SIGINT); it was stopped and what it wrote was removed',
  ]);
  assert.equal(exitCodeOf(failure), 130);
});

test('a second SIGINT (a person pressing Ctrl-C again) exits at once with 130', async (t) => {
  const codes: (number | string | null | undefined)[] = [];
  const exit = mock.method(process, 'exit', (code?: number) => {
    codes.push(code);
    return undefined as never;
  });
  t.after(() => exit.mock.restore());
  const log: string[] = [];
  const command = slowCleanup(log);
  const running = runCommand(
    command,
    makeReader(command, () => undefined),
    logger(log),
  );
  await new Promise((resolve) => setImmediate(resolve));
  process.emit('SIGINT', 'SIGINT');
  await new Promise((resolve) => setTimeout(resolve, 20));
  process.emit('SIGINT', 'SIGINT');
  assert.deepEqual(codes, [130]);
  assert.ok(log.includes('warning: a second SIGINT: exiting without waiting for the cleanup'));
  await running.catch(() => {});
});

test('after the command, the signal handlers are gone', async () => {
  const before = process.listenerCount('SIGTERM');
  const command = defineCommand({
    name: 'quick',
    description: 'Done at once.',
    inputs: [],
    outputs: [],
    parse: () => ({ timeoutSeconds: 60 }),
    execute: async () => ({ outputs: {}, summary: { heading: 'done', table: [] } }),
  }) as unknown as Command<never>;
  await runCommand(
    command,
    makeReader(command, () => undefined),
    logger([]),
  );
  assert.equal(process.listenerCount('SIGTERM'), before);
});

test('SIGTERM then SIGINT (sent together, arriving the other way round): the cleanup still finishes', async (t) => {
  const exit = mock.method(process, 'exit', () => undefined as never);
  t.after(() => exit.mock.restore());
  const log: string[] = [];
  const command = slowCleanup(log);
  const running = runCommand(
    command,
    makeReader(command, () => undefined),
    logger(log),
  );
  await new Promise((resolve) => setImmediate(resolve));
  process.emit('SIGTERM', 'SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 20));
  process.emit('SIGINT', 'SIGINT');
  await running.then(
    () => assert.fail('an interrupted command fails'),
    () => undefined,
  );
  assert.equal(exit.mock.callCount(), 0, 'the SIGINT after a SIGTERM did not exit');
  assert.equal(log.at(-1), 'cleanup finished');
});
