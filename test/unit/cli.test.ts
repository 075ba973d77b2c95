import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { renderSummary, runCli } from '../../shared/cli/cli.ts';

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
    /^error: command: 'backup' is not a Lifeboat command; accepted: backup-files, dump-mysql, backup-k8s, snapshot-ebs, snapshot-zfs, restore, verify-restore, list, prune-retention, copy, status, report\n$/,
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

/** A temporary folder with a small source folder in it; removed by the caller. */
function workFolder(): { dir: string; source: string; storage: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lifeboat-cli-'));
  const source = path.join(dir, 'src');
  fs.mkdirSync(source);
  fs.writeFileSync(path.join(source, 'a.conf'), 'a = 1\n');
  return { dir, source, storage: path.join(dir, 'backups') };
}

test('--dry-run alone is a dry run for prune-retention, also before another flag, which it does not swallow', async (t) => {
  const w = workFolder();
  t.after(() => fs.rmSync(w.dir, { recursive: true, force: true }));
  for (let i = 0; i < 2; i++) {
    const made = await cli(['backup-files', '--storage', w.storage, '--set', 'conf', '--source', w.source]);
    assert.equal(made.code, 0, made.err);
  }
  for (const args of [
    ['--keep-last', '1', '--dry-run'],
    ['--dry-run', '--keep-last', '1'],
  ]) {
    const run = await cli(['prune-retention', '--json', '--storage', w.storage, '--set', 'conf', ...args]);
    assert.equal(run.code, 0, run.err);
    const outputs = JSON.parse(run.out);
    assert.equal(outputs.result.dryRun, true, args.join(' '));
    assert.equal(outputs.deleted, 0);
  }
  assert.equal(fs.readdirSync(path.join(w.storage, 'conf')).length, 2);
  // A bare tri-state flag before another flag: true, and the next flag is read as a flag.
  const k8s = await cli(['backup-k8s', '--set', 'x', '--include-cluster-resources', '--mode', 'full']);
  assert.equal(
    k8s.err,
    'error: volume-snapshot-class: required with mode full (the CSI VolumeSnapshotClass to snapshot the PVCs with)\n',
  );
});

test('a flag given twice, a flag without its value and an empty flag are refused, one line each', async () => {
  const twice = await cli(['list', '--storage', '/tmp/a', '--storage', '/tmp/b']);
  assert.equal(twice.code, 1);
  assert.equal(twice.err, 'error: --storage: given more than once; give each flag once\n');
  const same = await cli(['list', '--storage=/tmp/a', '--storage', '/tmp/a']);
  assert.equal(same.err, 'error: --storage: given more than once; give each flag once\n');
  const swallowed = await cli(['list', '--storage', '--set', 'x']);
  assert.equal(swallowed.code, 1);
  assert.equal(
    swallowed.err,
    'error: --storage: needs a value (the next argument, --set, is a flag; write --storage=VALUE for a value starting with --)\n',
  );
  const empty = await cli(['list', '--storage', '/tmp/a', '--timeout', '']);
  assert.equal(
    empty.err,
    'error: --timeout: given empty (an unset variable?); give a value, or leave the flag out for the default, 10m\n',
  );
});

test('an empty storage is refused, from a flag or a variable, never read as ./backups', async (t) => {
  const w = workFolder();
  t.after(() => fs.rmSync(w.dir, { recursive: true, force: true }));
  const cwd = process.cwd();
  process.chdir(w.dir);
  t.after(() => process.chdir(cwd));
  for (const [args, env] of [
    [['--storage', ''], {}],
    [[], { LIFEBOAT_STORAGE: '' }],
  ] as [string[], NodeJS.ProcessEnv][]) {
    const run = await cli(['backup-files', '--set', 'conf', '--source', w.source, ...args], env);
    assert.equal(run.code, 1);
    assert.match(
      run.err,
      /^error: storage: given but empty \(an unset variable, such as \$\{\{ vars\.BACKUP_STORAGE \}\}\?\); accepted: a folder path, file:\/\/\/abs\/path, s3:\/\//,
    );
    assert.equal(run.err.split('\n').length, 2, run.err);
  }
  assert.deepEqual(fs.readdirSync(w.dir), ['src']);
});

test('on a GitHub-hosted runner a backup without storage is refused; elsewhere it warns and goes into ./backups', async (t) => {
  const w = workFolder();
  t.after(() => fs.rmSync(w.dir, { recursive: true, force: true }));
  const cwd = process.cwd();
  process.chdir(w.dir);
  t.after(() => process.chdir(cwd));
  const hosted = await cli(['backup-files', '--set', 'conf', '--source', w.source], {
    RUNNER_ENVIRONMENT: 'github-hosted',
  });
  assert.equal(hosted.code, 1);
  assert.equal(
    hosted.err,
    'error: storage: not given, so the backup would go into ./backups on this GitHub-hosted runner, which is deleted when the job ends; give storage (s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix; or a folder path, to keep it on the runner on purpose)\n',
  );
  assert.deepEqual(fs.readdirSync(w.dir), ['src']);
  const selfHosted = await cli(['backup-files', '--set', 'conf', '--source', w.source], {
    RUNNER_ENVIRONMENT: 'self-hosted',
  });
  assert.equal(selfHosted.code, 0, selfHosted.err);
  assert.match(
    selfHosted.err,
    /^warning: storage: not given; the backup goes into \.\/backups \(.*\/backups\) on this machine/m,
  );
  assert.match(selfHosted.err, /^warning: not encrypted: whoever can read the storage can read this backup/m);
  assert.equal(fs.readdirSync(path.join(w.dir, 'backups', 'conf')).length, 1);
});

test('--json prints numbers as numbers: bytes, duration-seconds, count', async (t) => {
  const w = workFolder();
  t.after(() => fs.rmSync(w.dir, { recursive: true, force: true }));
  const made = await cli([
    'backup-files',
    '--json',
    '--storage',
    w.storage,
    '--set',
    'conf',
    '--source',
    w.source,
  ]);
  assert.equal(made.code, 0, made.err);
  const outputs = JSON.parse(made.out);
  assert.equal(typeof outputs.bytes, 'number');
  assert.ok(outputs.bytes > 0);
  assert.equal(typeof outputs['duration-seconds'], 'number');
  assert.equal(typeof outputs['backup-id'], 'string');
  const listed = JSON.parse((await cli(['list', '--json', '--storage', w.storage])).out);
  assert.equal(listed.count, 1);
});

test('inputs a timer or a folder cannot hold are refused before any work', async (t) => {
  const w = workFolder();
  t.after(() => fs.rmSync(w.dir, { recursive: true, force: true }));
  const long = await cli([
    'backup-files',
    '--storage',
    w.storage,
    '--set',
    'conf',
    '--source',
    w.source,
    '--timeout',
    '25d',
  ]);
  assert.equal(long.code, 1);
  assert.equal(
    long.err,
    "error: timeout: '25d' is longer than a timer can wait; accepted: at most 24d20h31m\n",
  );
  const dir = path.join(w.dir, 'no-such-folder');
  const verify = await cli(['verify-restore', '--storage', w.storage, '--set', 'conf', '--work-dir', dir]);
  assert.equal(verify.code, 1);
  assert.equal(
    verify.err,
    `error: work-dir: '${dir}' does not exist; accepted: an existing folder (create it first, or leave work-dir out for RUNNER_TEMP or the system temp folder)\n`,
  );
  assert.deepEqual(fs.readdirSync(w.dir), ['src']);
});

test('the text summary: the status line first, then columns aligned over every row, short rows too', () => {
  const text = renderSummary(
    {
      outputs: {},
      summary: {
        heading: 'Backups',
        table: [
          ['Set', 'Id', 'Kind', 'Size', 'Verified'],
          ['etc', '2026-12-03-0300-backup-full', 'files', '1.2 KiB', 'passed'],
          ['a-much-longer-set-name', 'x'],
          ['db', 'id', 'mysql', '12 GiB', 'never'],
        ],
      },
    },
    'etc: backup OK 1.2 KiB',
  );
  const lines = text.split('\n');
  assert.equal(lines[0], 'etc: backup OK 1.2 KiB');
  assert.equal(lines[2], 'Backups');
  const at = (line: string, word: string) => line.indexOf(word);
  assert.equal(at(lines[3]!, 'Kind'), at(lines[4]!, 'files'));
  assert.equal(at(lines[4]!, 'files'), at(lines[6]!, 'mysql'), 'the column after a short row stays aligned');
  assert.equal(at(lines[3]!, 'Verified'), at(lines[6]!, 'never'));
  assert.equal(
    at(lines[4]!, 'passed'),
    at(lines[6]!, 'never'),
    'the widest cell of a column sets it, above a short row too',
  );
});
