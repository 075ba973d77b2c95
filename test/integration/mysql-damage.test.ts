/**
 * A damaged MySQL backup against real MariaDB servers: a byte flipped anywhere in the
 * stored zstd artifact ends every restore and verify-restore within a bound, with a message
 * that names the backup's damage (never the target server), and leaves nothing behind; a
 * client that swallowed its sync marker cannot hold a restore; the timeout stops a restore
 * that the server blocks; the post: step drops what a killed restore left.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { restoreCommand } from '../../shared/commands/restore.ts';
import { verifyRestoreCommand } from '../../shared/commands/verify-restore.ts';
import { clientPrograms, connect, writeOptionFile } from '../../shared/mysql/connection.ts';
import { dumpMysql } from '../../shared/mysql/dump.ts';
import { isAlive } from '../../shared/mysql/ephemeral.ts';
import { ClientStalledError, Loader } from '../../shared/mysql/loader.ts';
import { restoreMysql, type StagingLeftovers } from '../../shared/mysql/restore.ts';
import { IntegrityError } from '../../shared/pipeline/artifact.ts';
import { type Logger, silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import type { VerifyReport } from '../../shared/verify/report.ts';
import {
  connectionInputs,
  databases,
  type EphemeralServer,
  sampleShop,
  sql,
  startMysql,
  targetOf,
} from '../harness/mysql.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let storage: Storage;
let source: EphemeralServer;
let target: EphemeralServer;
let manifest: Manifest;
let artifactFile: string;
let original: Buffer;

/** Rows of text that compress to many zstd blocks and many 256 KiB chunks of SQL. */
const notes = `
USE shop;
CREATE TABLE notes (id INT PRIMARY KEY, body TEXT, n BIGINT);
INSERT INTO notes SELECT seq, CONCAT('note ', seq, ' ', MD5(seq), ' it''s \\\\ "q" ', SHA1(seq)), seq * 7919
  FROM seq_1_to_200000;
`;

/** The artifact with one byte changed at `at` (xor `mask`). */
async function flipped(at: number, mask: number): Promise<void> {
  const bytes = Buffer.from(original);
  bytes[at]! ^= mask;
  await fs.writeFile(artifactFile, bytes);
}

/** `work` settled within `ms`, or the word 'hung' (the signal is then aborted, for its cleanup). */
async function bounded<T>(
  ms: number,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<{ value?: T; error?: unknown; hung?: true; seconds: number }> {
  const started = Date.now();
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((resolve) => {
    timer = setTimeout(() => resolve('hung'), ms);
  });
  const running = work(controller.signal).then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  const outcome = await Promise.race([running, hung]);
  clearTimeout(timer);
  const seconds = (Date.now() - started) / 1000;
  if (outcome === 'hung') {
    controller.abort(new Error('the test gave up on it'));
    await Promise.race([running, new Promise((resolve) => setTimeout(resolve, 20_000))]);
    return { hung: true, seconds };
  }
  return { ...outcome, seconds };
}

/** Staging databases and the restored database on the target: none may be left. */
async function leftOnTarget(): Promise<string[]> {
  return (await databases(target)).filter((d) => d.startsWith('lbstage') || d === 'shop');
}

before(async () => {
  work = await tempDir('mysql-damage');
  storage = openStorage(path.join(work, 'backups'));
  [source, target] = await Promise.all([startMysql(), startMysql()]);
  await sql(source, sampleShop);
  await sql(source, notes);
  manifest = await dumpMysql({
    storage,
    set: 'damaged',
    target: targetOf(source),
    databases: ['shop'],
    includeSystemDatabases: false,
    excludeTables: [],
    binlogPosition: 'off',
    compression: 'zstd',
    tags: [],
    logger: silentLogger,
  });
  artifactFile = path.join(work, 'backups', manifest.set, manifest.id, manifest.artifacts[0]!.name);
  original = await fs.readFile(artifactFile);
  assert.ok(original.length > 4 * 1024 * 1024, `a multi-block artifact (${original.length} bytes)`);
});

after(async () => {
  await Promise.all([source?.stop(), target?.stop()]);
  await fs.rm(work, { recursive: true, force: true });
});

describe('a damaged artifact never hangs, and the diagnosis names the backup', () => {
  after(() => fs.writeFile(artifactFile, original));

  test('a byte flipped at 20 spread positions: each restore ends in time, says damaged, leaves nothing', async () => {
    const key = `${manifest.set}/${manifest.id}/${manifest.artifacts[0]!.name}`;
    const wrong: string[] = [];
    for (let k = 0; k < 20; k++) {
      const at = Math.floor(((k + 0.5) / 20) * original.length);
      await flipped(at, 1 << (k % 8));
      const run = await bounded(60_000, (signal) =>
        restoreMysql({
          storage,
          manifest,
          target: targetOf(target),
          databases: 'all',
          rename: new Map(),
          ifExists: 'fail',
          parallel: 2,
          dryRun: false,
          logger: silentLogger,
          signal,
        }),
      );
      const message = run.error instanceof Error ? run.error.message : String(run.error);
      const problems = [
        run.hung && `still running after ${run.seconds.toFixed(0)} s`,
        !run.hung && !run.error && 'restored a damaged backup',
        run.error !== undefined && !(run.error instanceof IntegrityError) && 'not an IntegrityError',
        run.error !== undefined && !message.startsWith(key) && 'does not name the backup',
        run.error !== undefined &&
          !/sha256 [0-9a-f]{64} does not match the manifest's|truncated or damaged/.test(message) &&
          'not the sha256 verdict',
        /on the target server/.test(message) && 'blames the target server',
      ].filter(Boolean);
      const left = await leftOnTarget();
      if (left.length) {
        problems.push(`left ${left.join(', ')}`);
        await sql(target, left.map((d) => `DROP DATABASE \`${d}\`;`).join('\n'));
      }
      if (problems.length) wrong.push(`byte ${at}: ${problems.join(', ')} (${message})`);
    }
    assert.deepEqual(wrong, []);
  });

  test('verify-restore of a damaged artifact: the sha256 row fails, the report is written, nothing is left', async () => {
    const wrong: string[] = [];
    for (const fraction of [0.2, 0.45, 0.7, 0.95]) {
      const at = Math.floor(fraction * original.length);
      await flipped(at, 0x04);
      const workDir = path.join(work, `verify-${at}`);
      await fs.mkdir(workDir);
      const inputs: Record<string, string> = {
        storage: path.join(work, 'backups'),
        set: manifest.set,
        backup: manifest.id,
        'work-dir': workDir,
        'progress-interval': '1h',
        record: 'false',
      };
      const command = verifyRestoreCommand as unknown as Command<never>;
      const run = await bounded(90_000, () =>
        runCommand(
          command,
          makeReader(command, (spec) => inputs[spec.name] ?? spec.default),
          silentLogger,
        ),
      );
      if (run.hung || run.error) {
        wrong.push(`byte ${at}: ${run.hung ? 'hung' : String(run.error)}`);
        continue;
      }
      const result = run.value as CommandResult;
      const report = JSON.parse(await fs.readFile(result.outputs.report!, 'utf8')) as VerifyReport;
      const sha = report.checks.find((c) => c.name.startsWith('sha256:'));
      if (sha?.status !== 'failed' || !/damaged|does not match/.test(sha.detail))
        wrong.push(`byte ${at}: sha256 row ${JSON.stringify(sha)}`);
      if (report.checks.some((c) => /on the target server/.test(c.detail)))
        wrong.push(`byte ${at}: a row blames the target server`);
      if (!report.environment.removed || isAlive(report.environment.pid as number))
        wrong.push(`byte ${at}: the environment is not removed`);
      const left = (await fs.readdir(workDir)).filter((f) => f.startsWith('lifeboat-mysqld'));
      if (left.length) wrong.push(`byte ${at}: left ${left.join(', ')} in the work folder`);
      await fs.rm(workDir, { recursive: true, force: true });
    }
    assert.deepEqual(wrong, []);
  });
});

describe('no wait is unbounded', () => {
  test('a client that took the sync marker into an unterminated string fails the wait within seconds', async () => {
    const programs = await clientPrograms('mariadb');
    const optionFile = await writeOptionFile(targetOf(target), programs.flavour);
    try {
      const loader = new Loader(
        {
          program: programs.client,
          args: [...optionFile.args, ...programs.sandboxArgs],
          optionFd: optionFile.fd,
        },
        'loader 1',
      );
      await loader.sync();
      await loader.write("SELECT 'this string is never closed;\n");
      const run = await bounded(15_000, () => loader.sync());
      loader.kill();
      await loader.gone();
      assert.ok(!run.hung, `the wait ended (${run.seconds.toFixed(1)} s)`);
      assert.ok(loader.connectionId! > 0, 'the connection id is known, to KILL its statement on the server');
      assert.ok(run.error instanceof ClientStalledError, String(run.error));
      assert.match(
        (run.error as Error).message,
        /never ran the last of them: it is still inside an unfinished statement/,
      );
    } finally {
      await optionFile.dispose();
    }
  });

  test('the timeout stops a restore that the server blocks, within seconds, and nothing is left', async () => {
    await fs.writeFile(artifactFile, original);
    const blocker = await connect(targetOf(target));
    await blocker.query('FLUSH TABLES WITH READ LOCK');
    const states: unknown[] = [];
    let run: Awaited<ReturnType<typeof bounded>>;
    try {
      const inputs: Record<string, string> = {
        storage: path.join(work, 'backups'),
        set: manifest.set,
        backup: manifest.id,
        ...connectionInputs(target),
        timeout: '3s',
        'progress-interval': '1h',
      };
      const command = restoreCommand as unknown as Command<never>;
      run = await bounded(90_000, () =>
        runCommand(
          command,
          makeReader(command, (spec) => inputs[spec.name] ?? spec.default),
          silentLogger,
          { leftovers: (state) => states.push(state) },
        ),
      );
    } finally {
      await blocker.query('UNLOCK TABLES');
      await blocker.end();
    }
    assert.ok(!run.hung && run.seconds < 15, `stopped after ${run.seconds.toFixed(1)} s`);
    assert.match(String(run.error), /timeout: restore did not finish within 3s/);
    // Nothing the blocked statements asked for happens once the lock is gone.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.deepEqual(await leftOnTarget(), []);
    assert.equal(states.at(-1), undefined, 'nothing is left for the post: step');
  });
});

describe('verify-restore stopped by its timeout', () => {
  test('removes its environment within seconds and still writes its report', async () => {
    await fs.writeFile(artifactFile, original);
    const workDir = path.join(work, 'timeout-verify');
    await fs.mkdir(workDir);
    const reportFile = path.join(workDir, 'report.json');
    const inputs: Record<string, string> = {
      storage: path.join(work, 'backups'),
      set: manifest.set,
      backup: manifest.id,
      'work-dir': workDir,
      'report-file': reportFile,
      'progress-interval': '1h',
      // Whatever phase the timeout comes in, it comes.
      'post-restore-command': 'sleep 120',
      timeout: '5s',
    };
    const command = verifyRestoreCommand as unknown as Command<never>;
    const run = await bounded(90_000, () =>
      runCommand(
        command,
        makeReader(command, (spec) => inputs[spec.name] ?? spec.default),
        silentLogger,
      ),
    );
    assert.ok(!run.hung && run.seconds < 25, `ended after ${run.seconds.toFixed(1)} s`);
    assert.match(String(run.error), /timeout: verify-restore did not finish within 5s/);
    const report = JSON.parse(await fs.readFile(reportFile, 'utf8')) as VerifyReport;
    assert.equal(report.passed, false);
    const stopped = report.checks.find((c) => c.name === 'stopped');
    assert.equal(stopped?.status, 'failed');
    assert.match(stopped!.detail, /timeout: verify-restore did not finish within 5s/);
    assert.equal(report.environment.removed, true);
    assert.deepEqual(
      (await fs.readdir(workDir)).filter((f) => f.startsWith('lifeboat-mysqld')),
      [],
      'no datadir left',
    );
    if (report.environment.pid) assert.equal(isAlive(report.environment.pid as number), false);
    const records = await fs
      .readdir(path.join(work, 'backups', manifest.set, manifest.id, 'verifications'))
      .catch(() => []);
    assert.deepEqual(records, [], 'a stopped run records no verification');
  });
});

describe('the post: step of a killed restore', () => {
  const collect = () => {
    const lines: string[] = [];
    const logger: Logger = { info: (m) => lines.push(m), warn: (m) => lines.push(m) };
    return { lines, logger };
  };
  const read = () => {
    const command = restoreCommand as unknown as Command<never>;
    const inputs = connectionInputs(target);
    return makeReader(command, (spec) => inputs[spec.name] ?? spec.default);
  };

  test('a restore records its staging databases before it makes them, and clears them when done', async () => {
    await fs.writeFile(artifactFile, original);
    const states: unknown[] = [];
    const inputs: Record<string, string> = {
      storage: path.join(work, 'backups'),
      set: manifest.set,
      backup: manifest.id,
      ...connectionInputs(target),
      rename: 'shop=shop_post',
      'progress-interval': '1h',
    };
    const command = restoreCommand as unknown as Command<never>;
    await runCommand(
      command,
      makeReader(command, (spec) => inputs[spec.name] ?? spec.default),
      silentLogger,
      { leftovers: (state) => states.push(state) },
    );
    const first = states[0] as StagingLeftovers;
    assert.equal(first.type, 'mysql-staging');
    assert.match(first.databases[0]!.stage, /^lbstage_[0-9a-f]{6}_0$/);
    assert.equal(first.databases[0]!.target, 'shop_post');
    assert.ok(
      states.some((s) => (s as StagingLeftovers | undefined)?.swapping),
      'the swap is recorded as begun',
    );
    assert.equal(states.at(-1), undefined);
    await sql(target, 'DROP DATABASE shop_post');
  });

  test('drops the staging databases left, keeps one whose target the swap had dropped, touches no other', async () => {
    await sql(
      target,
      `CREATE DATABASE lbstage_abcdef_0; CREATE TABLE lbstage_abcdef_0.t (id INT);
       CREATE DATABASE lbstage_abcdef_1; CREATE TABLE lbstage_abcdef_1.t (id INT);
       CREATE DATABASE keep_me; CREATE TABLE keep_me.t (id INT);`,
    );
    const { lines, logger } = collect();
    const state: StagingLeftovers = {
      type: 'mysql-staging',
      swapping: true,
      databases: [
        { stage: 'lbstage_abcdef_0', target: 'fresh', replaces: false },
        { stage: 'lbstage_abcdef_1', target: 'replaced', replaces: true },
        { stage: 'keep_me', target: 'x', replaces: false },
      ],
    };
    await assert.rejects(
      restoreCommand.cleanup!(state, read(), logger),
      /killed during its swap; kept on root@127\.0\.0\.1:\d+: lbstage_abcdef_1 \(the restored tables of replaced/,
    );
    const left = await databases(target);
    assert.ok(!left.includes('lbstage_abcdef_0'), 'the staging database is dropped');
    assert.ok(left.includes('lbstage_abcdef_1'), 'the only copy of replaced is kept');
    assert.ok(left.includes('keep_me'), 'a name restore never gives a stage is left alone');
    assert.ok(lines.some((l) => /dropped the staging database lbstage_abcdef_0/.test(l)));
    await sql(target, 'DROP DATABASE lbstage_abcdef_1; DROP DATABASE keep_me;');
  });
});
