/**
 * Secrets never reach a child process or stay on disk, through the built bundle: hooks and
 * the MySQL client programs get a scrubbed environment, the password is on no command line,
 * and after kill -9 of dump-mysql no file holding it is left anywhere.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateIdentity } from 'age-encryption';
import { connectionInputs, type EphemeralServer, sampleShop, sql, startMysql } from '../harness/mysql.ts';
import { baseEnv, repoRoot, runAction } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let source: EphemeralServer;
let identity: string;
const password = 'Sekr1t-pw-7f3a';
const passphrase = 'phrase-9c2e-never-shown';
/** Variables a runner may hold that no child should see. */
const runnerSecrets = {
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'oidc-token-5d1b',
  AWS_SECRET_ACCESS_KEY: 'aws-secret-44ab',
  AZURE_STORAGE_CONNECTION_STRING: 'DefaultEndpointsProtocol=https;AccountKey=azure-key-77c1',
};

before(async () => {
  work = await tempDir('secrets-e2e');
  identity = await generateIdentity();
  source = await startMysql();
  await sql(source, sampleShop);
  await sql(
    source,
    `CREATE USER 'backup'@'%' IDENTIFIED BY '${password}';
     GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* TO 'backup'@'%';
     CREATE DATABASE big;
     CREATE TABLE big.t (id INT PRIMARY KEY, filler CHAR(100));
     USE big;
     INSERT INTO t SELECT seq, REPEAT('x', 100) FROM seq_1_to_1500000;`,
  );
});

after(async () => {
  await source?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

const secretsIn = (text: string) =>
  [password, passphrase, identity, ...Object.values(runnerSecrets)].filter((s) => text.includes(s));

describe('children get a scrubbed environment', () => {
  test('dump-mysql hooks see no secret input, CLI secret or runner credential', async () => {
    const envFile = path.join(work, 'dump-hook.env');
    const run = await runAction(
      'dump-mysql',
      {
        storage: path.join(work, 'backups'),
        set: 'shop',
        databases: 'shop',
        ...connectionInputs(source),
        user: 'backup',
        password,
        'age-passphrase': passphrase,
        'pre-command': `env > ${envFile}`,
      },
      { ...runnerSecrets, LIFEBOAT_AGE_IDENTITY: identity, LIFEBOAT_MYSQL_PASSWORD: password },
    );
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const env = await fs.readFile(envFile, 'utf8');
    assert.deepEqual(secretsIn(env), [], 'no secret value in the hook environment');
    assert.doesNotMatch(env, /^(INPUT_|LIFEBOAT_)/m, 'no input or CLI variable at all');
    assert.match(env, /^PATH=/m, 'the ordinary environment is kept');
  });

  test("verify-restore's post-restore-command gets the throwaway server's variables and no secret", async () => {
    const backups = path.join(work, 'backups');
    const envFile = path.join(work, 'verify-hook.env');
    const run = await runAction(
      'verify-restore',
      {
        storage: backups,
        set: 'shop',
        'age-passphrase': passphrase,
        'work-dir': await tempDir('secrets-verify'),
        'post-restore-command': `env > ${envFile}`,
        password,
      },
      { ...runnerSecrets, LIFEBOAT_AGE_IDENTITY: identity },
    );
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const env = await fs.readFile(envFile, 'utf8');
    assert.deepEqual(secretsIn(env), []);
    assert.match(env, /^DATABASE_URL=mysql:\/\/root@127\.0\.0\.1:\d+\/shop$/m);
    assert.match(env, /^MYSQL_TCP_PORT=\d+$/m);
    assert.doesNotMatch(env, /^(INPUT_|LIFEBOAT_AGE|ACTIONS_ID_TOKEN)/m);
  });
});

/** The processes whose command line mentions `word`, with their arguments. */
async function commandLines(word: string): Promise<string[]> {
  const lines: string[] = [];
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(word)) lines.push(cmdline.replaceAll('\0', ' '));
  }
  return lines;
}

/** Every file under `dir` (recursively) whose content holds `text`. */
async function filesHolding(dir: string, text: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    if ((await fs.readFile(file, 'utf8').catch(() => '')).includes(text)) found.push(file);
  }
  return found;
}

describe('the password after kill -9', () => {
  test('dump-mysql killed mid-dump leaves no file holding the password, and it was on no command line', async () => {
    const tmp = await tempDir('secrets-tmp');
    const child = spawn(
      process.execPath,
      [
        path.join(repoRoot, 'bin/lifeboat.js'),
        'dump-mysql',
        '--storage',
        path.join(work, 'killed'),
        '--set',
        'big',
        '--databases',
        'big',
        '--host',
        '127.0.0.1',
        '--port',
        String(source.port),
        '--user',
        'backup',
        '--ssl-mode',
        'disabled',
      ],
      { env: baseEnv({ TMPDIR: tmp, LIFEBOAT_MYSQL_PASSWORD: password }), stdio: 'ignore' },
    );
    const exited = new Promise((resolve) => child.once('close', resolve));
    let dumper: string[] = [];
    for (let i = 0; i < 200 && dumper.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      dumper = await commandLines('mariadb-dump');
    }
    assert.equal(dumper.length, 1, 'the dump was running when it was killed');
    assert.match(dumper[0]!, /--defaults-extra-file=\/dev\/fd\/3/);
    assert.ok(!dumper[0]!.includes(password), 'the password is on no command line');
    child.kill('SIGKILL');
    await exited;
    assert.deepEqual(await filesHolding(tmp, password), [], 'no file in TMPDIR holds the password');
    assert.deepEqual(await fs.readdir(tmp), [], 'nothing at all is left in TMPDIR');
    await fs.rm(tmp, { recursive: true, force: true });
  });
});
