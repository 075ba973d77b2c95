/**
 * The restore action killed with SIGKILL (no cleanup of its own can run) and its `post:`
 * step, through the built bundle as the runner runs them: the main step records its staging
 * databases or folder in GITHUB_STATE before it makes them, and actions/restore/post.js,
 * given that state, removes them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { backupFiles } from '../../shared/files/backup.ts';
import { dumpMysql } from '../../shared/mysql/dump.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { generated } from '../harness/data.ts';
import {
  connectionInputs,
  databases,
  type EphemeralServer,
  sampleShop,
  sql,
  startMysql,
  targetOf,
} from '../harness/mysql.ts';
import { baseEnv, parseOutputs, repoRoot } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let storage: string;

before(async () => {
  work = await tempDir('restore-post');
  storage = path.join(work, 'backups');
});
after(() => fs.rm(work, { recursive: true, force: true }));

/** INPUT_* for actions/restore: the action.yml defaults, then `inputs`. */
async function inputEnv(inputs: Record<string, string>): Promise<Record<string, string>> {
  const action = parse(await fs.readFile(path.join(repoRoot, 'actions/restore/action.yml'), 'utf8'));
  const env: Record<string, string> = {};
  for (const [name, spec] of Object.entries(action.inputs as Record<string, { default?: string }>))
    env[`INPUT_${name.toUpperCase()}`] = inputs[name] ?? spec.default ?? '';
  return env;
}

/**
 * Runs actions/restore/main.js until `ready()` says it is in the middle of its work, kills it
 * with SIGKILL, and returns the state it saved for its post: step.
 */
async function killMidway(inputs: Record<string, string>, ready: () => Promise<boolean>) {
  const stateFile = path.join(work, `state-${Date.now()}`);
  await fs.writeFile(stateFile, '');
  const child = spawn(process.execPath, [path.join(repoRoot, 'actions/restore/main.js')], {
    env: { ...baseEnv(), ...(await inputEnv(inputs)), GITHUB_STATE: stateFile, GITHUB_ACTIONS: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (output += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const deadline = Date.now() + 60_000;
  let midway = false;
  while (!midway && Date.now() < deadline && child.exitCode === null) {
    midway = await ready();
    if (!midway) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  child.kill('SIGKILL');
  await exited;
  assert.ok(midway, `the restore was caught in the middle of its work: ${output}`);
  return parseOutputs(await fs.readFile(stateFile, 'utf8'));
}

/** Runs actions/restore/post.js with the saved state, as the runner does after a killed step. */
async function runPost(inputs: Record<string, string>, state: Record<string, string>) {
  const env = {
    ...baseEnv(),
    ...(await inputEnv(inputs)),
    ...Object.fromEntries(Object.entries(state).map(([k, v]) => [`STATE_${k}`, v])),
    GITHUB_ACTIONS: 'true',
  };
  return new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'actions/restore/post.js')], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (output += d));
    child.once('close', (code) => resolve({ code, output }));
  });
}

describe('restore killed with SIGKILL, then its post: step', () => {
  let source: EphemeralServer;
  let target: EphemeralServer;
  before(async () => {
    [source, target] = await Promise.all([startMysql(), startMysql()]);
  });
  after(() => Promise.all([source?.stop(), target?.stop()]));

  test('mysql: the staging databases of the killed step are dropped', async () => {
    await sql(source, sampleShop);
    await sql(
      source,
      `USE shop; CREATE TABLE notes (id INT PRIMARY KEY, body TEXT);
       INSERT INTO notes SELECT seq, CONCAT(MD5(seq), SHA1(seq), MD5(-seq)) FROM seq_1_to_300000;`,
    );
    const manifest = await dumpMysql({
      storage: openStorage(storage),
      set: 'shop',
      target: targetOf(source),
      databases: ['shop'],
      includeSystemDatabases: false,
      excludeTables: [],
      binlogPosition: 'off',
      compression: 'zstd',
      tags: [],
      logger: silentLogger,
    });
    const inputs = { storage, set: 'shop', backup: manifest.id, ...connectionInputs(target) };
    // Killed while its staging database is being loaded.
    const staged = async () => {
      const stages = (await databases(target)).filter((d) => d.startsWith('lbstage_'));
      if (!stages.length) return false;
      const rows = await sql(
        target,
        `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '${stages[0]}'`,
      );
      return Number(rows.trim()) > 0;
    };
    const state = await killMidway(inputs, staged);
    const left = JSON.parse(state.leftovers ?? '{}');
    assert.equal(left.type, 'mysql-staging', JSON.stringify(state));
    assert.ok(
      (await databases(target)).some((d) => d.startsWith('lbstage_')),
      'the kill left a staging database',
    );
    const run = await runPost(inputs, state);
    assert.equal(run.code, 0, run.output);
    assert.match(run.output, /dropped the staging database lbstage_[0-9a-f]{6}_0/);
    assert.deepEqual(
      (await databases(target)).filter((d) => d.startsWith('lbstage_') || d === 'shop'),
      [],
    );
  });

  test('files: the staging folder of the killed step is removed, the target untouched', async () => {
    const folder = path.join(work, 'big');
    await fs.mkdir(folder);
    const file = await fs.open(path.join(folder, 'data.bin'), 'w');
    for await (const chunk of generated(256 * 1024 * 1024)) await file.write(chunk as Buffer);
    await file.close();
    const manifest = await backupFiles({
      storage: openStorage(storage),
      set: 'big',
      source: folder,
      include: [],
      exclude: [],
      compression: 'none',
      tags: [],
      logger: silentLogger,
    });
    const parent = path.join(work, 'target-parent');
    await fs.mkdir(parent);
    const target = path.join(parent, 'live');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'precious.txt'), 'old');
    const inputs = { storage, set: 'big', backup: manifest.id, target, overwrite: 'true' };
    const staging = async () => (await fs.readdir(parent)).some((n) => n.includes('.lifeboat-restore-'));
    const state = await killMidway(inputs, staging);
    assert.equal(JSON.parse(state.leftovers ?? '{}').type, 'files-staging', JSON.stringify(state));
    const run = await runPost(inputs, state);
    assert.equal(run.code, 0, run.output);
    assert.match(run.output, /removed the staging folder .*\.live\.lifeboat-restore-/);
    assert.deepEqual(await fs.readdir(parent), ['live']);
    assert.deepEqual(await fs.readdir(target), ['precious.txt']);
  });
});
