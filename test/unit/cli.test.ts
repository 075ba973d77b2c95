import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runCli } from '../../shared/cli/cli.ts';

async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  let out = '';
  let err = '';
  const code = await runCli(args, { out: (t) => (out += t), err: (t) => (err += t), env });
  return { code, out, err };
}

test('help lists the built commands', async () => {
  const { code, out } = await cli(['--help']);
  assert.equal(code, 0);
  for (const name of ['backup-files', 'dump-mysql', 'backup-k8s', 'snapshot-ebs', 'verify-restore'])
    assert.match(out, new RegExp(`\\n  ${name} `));
  assert.doesNotMatch(out, /Not built yet/);
  const help = await cli(['restore', '--help']);
  assert.match(help.out, /\(secret\) LIFEBOAT_AGE_IDENTITY/);
  assert.match(help.out, /--storage \[LIFEBOAT_STORAGE\]/);
});

test('a secret given as a flag is refused before anything runs', async () => {
  const { code, err } = await cli(['restore', '--set', 'x', '--age-identity', 'AGE-SECRET-KEY-1XYZ']);
  assert.equal(code, 1);
  assert.equal(
    err,
    'error: --age-identity: secrets are not accepted as flags (other users can read process arguments); set LIFEBOAT_AGE_IDENTITY instead\n',
  );
});

test('unknown commands, missing inputs and unknown flags each get one line', async () => {
  assert.match(
    (await cli(['backup'])).err,
    /^error: command: 'backup' is not a Lifeboat command; accepted: backup-files, dump-mysql, backup-k8s, snapshot-ebs, restore, verify-restore, list, prune-retention\n$/,
  );
  assert.match(
    (await cli(['backup-k8s', '--set', 'x', '--mode', 'full'])).err,
    /volume-snapshot-class: required with mode full/,
  );
  assert.match(
    (await cli(['list', '--bucket', 'x'])).err,
    /--bucket: not an input of list; accepted: --storage --set --timeout/,
  );
});

test('every bad input is reported at once, and --json prints the error lines', async () => {
  const { code, out, err } = await cli(
    ['backup-files', '--json', '--compression', 'lz4', '--storage', 'ftp://x', '--timeout=soon'],
    {},
  );
  assert.equal(code, 1);
  const lines = err.trim().split('\n');
  assert.equal(lines.length, 5, err); // compression, storage, set, source, timeout
  assert.deepEqual(JSON.parse(out).expected, true);
});

test('inputs come from LIFEBOAT_ variables when no flag is given', async () => {
  const { code, err } = await cli(['list'], { LIFEBOAT_STORAGE: 'ftp://nowhere' });
  assert.equal(code, 1);
  assert.match(err, /storage: unknown scheme 'ftp:\/\/'/);
});
