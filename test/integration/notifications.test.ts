/**
 * notify-url, webhook-url, metrics-file and pushgateway-url on real commands: a healthchecks
 * style receiver and a Slack-style webhook (a local recording server), the real Prometheus
 * Pushgateway scraped back, and node-exporter's textfile format on disk. None of them may block
 * or fail the command: an unreachable or hanging receiver is a warning within a bound.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import { backupFilesCommand } from '../../shared/commands/backup-files.ts';
import { commands } from '../../shared/commands/index.ts';
import { withSignals } from '../../shared/signals/index.ts';
import { type Recorder, startRecorder } from '../harness/http-recorder.ts';
import { type Pushgateway, pushgatewayInstalled, startPushgateway } from '../harness/pushgateway.ts';
import { runAction, runCli } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let source: string;
let storage: string;
let hooks: Recorder;

const command = (name: string) => commands.find((c) => c.name === name)!;

interface Ran {
  result?: CommandResult;
  error?: unknown;
  warnings: string[];
  logs: string[];
}

async function run(cmd: Command<never>, inputs: Record<string, string>): Promise<Ran> {
  const warnings: string[] = [];
  const logs: string[] = [];
  const logger = { info: (m: string) => logs.push(m), warn: (m: string) => warnings.push(m) };
  const read = makeReader(cmd, (spec) => inputs[spec.name] ?? spec.default);
  try {
    return { result: await runCommand(cmd, read, logger), warnings, logs };
  } catch (error) {
    return { error, warnings, logs };
  }
}

const backupInputs = (extra: Record<string, string>) => ({
  storage,
  set: 'etc-nova',
  source,
  'progress-interval': '1h',
  ...extra,
});

before(async () => {
  work = await tempDir('signals');
  source = path.join(work, 'etc-nova');
  storage = path.join(work, 'backups');
  await fs.mkdir(source);
  await fs.writeFile(path.join(source, 'nova.conf'), '[DEFAULT]\ndebug = false\n');
  hooks = await startRecorder();
});

after(async () => {
  await hooks?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('notify-url: a healthchecks-style ping', () => {
  test('a backup pings /start, then the URL, with what it did', async () => {
    hooks.requests.length = 0;
    const ran = await run(
      command('backup-files'),
      backupInputs({ 'notify-url': `${hooks.url}/ping/abc123` }),
    );
    assert.ok(ran.result, String(ran.error));
    assert.deepEqual(
      hooks.requests.map((r) => `${r.method} ${r.path}`),
      ['POST /ping/abc123/start', 'POST /ping/abc123'],
    );
    const body = hooks.requests[1]!.body;
    assert.match(body, /^etc-nova: backup OK /);
    assert.match(body, new RegExp(`backup: ${ran.result.outputs['backup-id']}`));
    assert.match(body, /command: backup-files\nset: etc-nova/);
    assert.deepEqual(
      ran.warnings.filter((w) => /notify-url/.test(w)),
      [],
    );
  });

  test('a failed backup pings /fail with the error; the command still fails as it would', async () => {
    hooks.requests.length = 0;
    const ran = await run(
      command('backup-files'),
      backupInputs({ source: path.join(work, 'gone'), 'notify-url': `${hooks.url}/ping/abc123` }),
    );
    assert.match(String(ran.error), /source: .*gone/);
    assert.deepEqual(
      hooks.requests.map((r) => r.path),
      ['/ping/abc123/start', '/ping/abc123/fail'],
    );
    assert.match(hooks.requests[1]!.body, /etc-nova: backup-files FAILED: source: /);
    assert.match(hooks.requests[1]!.body, /\nerror: source: /);
  });

  test('a verification that finds a failed check pings /fail', async () => {
    hooks.requests.length = 0;
    const ran = await run(command('verify-restore'), {
      storage,
      set: 'etc-nova',
      'work-dir': work,
      'allow-unencrypted': 'true',
      'check-commands': '- name: nginx.conf exists\n  run: test -f "$RESTORED_DIR/nginx.conf"\n',
      'notify-url': `${hooks.url}/ping/verify`,
      'progress-interval': '1h',
    });
    assert.equal(ran.result?.outputs.passed, 'false');
    assert.deepEqual(
      hooks.requests.map((r) => r.path),
      ['/ping/verify/start', '/ping/verify/fail'],
    );
    assert.match(hooks.requests[1]!.body, /etc-nova: verify FAILED: .*nginx\.conf exists/);
    assert.match(hooks.requests[1]!.body, /rto-seconds: \d/);
  });
});

describe('webhook-url: a Slack-compatible message', () => {
  test('on failure only by default: {"text": …} with mrkdwn escaped', async () => {
    hooks.requests.length = 0;
    const ok = await run(command('backup-files'), backupInputs({ 'webhook-url': `${hooks.url}/slack` }));
    assert.ok(ok.result);
    assert.equal(hooks.requests.length, 0, 'nothing on success');
    await run(
      command('backup-files'),
      backupInputs({
        source: path.join(work, '<!channel> & <http://x|y>'),
        'webhook-url': `${hooks.url}/slack`,
      }),
    );
    assert.equal(hooks.requests.length, 1);
    const [request] = hooks.requests;
    assert.equal(request!.contentType, 'application/json');
    const message = JSON.parse(request!.body) as { text: string };
    assert.match(message.text, /^etc-nova: backup-files FAILED: /);
    assert.match(message.text, /&lt;!channel&gt; &amp; &lt;http:\/x\|y&gt;/);
    assert.doesNotMatch(message.text, /<!channel>/);
  });

  test('webhook-on-success: true posts the success line too', async () => {
    hooks.requests.length = 0;
    await run(
      command('backup-files'),
      backupInputs({
        'webhook-url': `${hooks.url}/slack`,
        'webhook-on-success': 'true',
        'report-url': 'https://example.github.io/backups/',
      }),
    );
    const { text } = JSON.parse(hooks.requests[0]!.body);
    assert.match(text, /^etc-nova: backup OK \d/);
    assert.match(text, /\n<https:\/\/example\.github\.io\/backups\/\|report>$/);
  });
});

describe('receivers that fail never fail the command', () => {
  const policy = { timeoutMs: 400, tries: 2, pauseMs: 50 };
  const quick = withSignals(backupFilesCommand as unknown as Command<never>, policy);

  test('unreachable: a warning naming the input, not the URL; the backup succeeds', async () => {
    const closed = await startRecorder();
    await closed.stop();
    const secretPath = '/ping/secret-token-5f2c';
    const ran = await run(quick, backupInputs({ 'notify-url': `${closed.url}${secretPath}` }));
    assert.ok(ran.result, String(ran.error));
    const signals = ran.warnings.filter((w) => w.startsWith('notify-url'));
    assert.equal(signals.length, 2, ran.warnings.join('\n'));
    for (const w of signals) {
      assert.match(
        w,
        /^notify-url: not delivered: ECONNREFUSED \(2 tries\); the command's result is not affected$/,
      );
    }
    assert.ok(![...ran.warnings, ...ran.logs].some((l) => l.includes('secret-token')));
  });

  test('hanging: bounded by the timeout and retried once, then a warning', async () => {
    const hanging = await startRecorder();
    hanging.answer = 'hang';
    const t = Date.now();
    const ran = await run(
      quick,
      backupInputs({ 'webhook-url': `${hanging.url}/slack`, source: path.join(work, 'no') }),
    );
    const seconds = (Date.now() - t) / 1000;
    await hanging.stop();
    assert.match(String(ran.error), /source: /, 'the command fails for its own reason');
    assert.ok(seconds < 5, `took ${seconds} s`);
    assert.equal(hanging.requests.length, 2, 'two tries');
    assert.match(ran.warnings.join('\n'), /webhook-url: not delivered: no answer within 0.4 s \(2 tries\)/);
  });

  test('a 500 is retried, a 404 is not', async () => {
    const failing = await startRecorder();
    failing.answer = 500;
    await run(quick, backupInputs({ 'webhook-url': `${failing.url}/a`, 'webhook-on-success': 'true' }));
    assert.equal(failing.requests.length, 2);
    failing.requests.length = 0;
    failing.answer = 404;
    const ran = await run(
      quick,
      backupInputs({ 'webhook-url': `${failing.url}/a`, 'webhook-on-success': 'true' }),
    );
    assert.equal(failing.requests.length, 1);
    assert.match(ran.warnings.join('\n'), /webhook-url: not delivered: HTTP 404 \(2 tries\)/);
    await failing.stop();
  });
});

describe('bad signal inputs: one line each, with the command’s own', () => {
  test('refused before any work, naming the input and never echoing its value', async () => {
    const ran = await run(
      command('backup-files'),
      backupInputs({
        source: '',
        'notify-url': 'ftp://hc.example/secret-uuid',
        'webhook-url': 'https://user:pw@hooks.example/x',
        'metrics-file': path.join(work, 'no-such-folder', 'lifeboat.prom'),
        'webhook-on-success': 'sometimes',
      }),
    );
    const lines = (ran.error as { lines?: string[] }).lines ?? [];
    assert.ok(
      lines.some((l) => l.startsWith('source:')),
      lines.join('\n'),
    );
    assert.ok(
      lines.includes('notify-url: the scheme ftp: is not accepted; accepted: an http:// or https:// URL'),
    );
    assert.ok(lines.some((l) => /^webhook-url: credentials in the URL are not accepted/.test(l)));
    assert.ok(lines.some((l) => /^metrics-file: the folder .*no-such-folder does not exist/.test(l)));
    assert.ok(lines.some((l) => l.startsWith('webhook-on-success:')));
    assert.ok(!lines.join('\n').includes('secret-uuid') && !lines.join('\n').includes('pw@'));
    assert.deepEqual(await fs.readdir(work).then((n) => n.filter((x) => x === 'backups-never')), []);
  });

  test('on the CLI the URLs are secrets: a flag is refused, the variable is used', async () => {
    const flag = await runCli(
      [
        'backup-files',
        '--storage',
        storage,
        '--set',
        'etc-nova',
        '--source',
        source,
        '--notify-url',
        hooks.url,
      ],
      {},
    );
    assert.equal(flag.code, 1);
    assert.match(
      flag.stderr,
      /--notify-url: secrets are not accepted as flags .*set LIFEBOAT_NOTIFY_URL instead/,
    );
    hooks.requests.length = 0;
    const env = await runCli(
      ['backup-files', '--storage', storage, '--set', 'etc-nova', '--source', source],
      {
        LIFEBOAT_NOTIFY_URL: `${hooks.url}/ping/from-env`,
      },
    );
    assert.equal(env.code, 0, env.stderr);
    assert.deepEqual(
      hooks.requests.map((r) => r.path),
      ['/ping/from-env/start', '/ping/from-env'],
    );
    assert.ok(!`${env.stdout}${env.stderr}`.includes('from-env'));
  });
});

describe('metrics-file: the textfile collector format, written atomically', () => {
  test('success, then failure: the last success time stays, run_success drops to 0', async () => {
    const dir = await tempDir('textfile');
    const file = path.join(dir, 'lifeboat-etc-nova.prom');
    const ok = await run(command('backup-files'), backupInputs({ 'metrics-file': file }));
    assert.ok(ok.result);
    const first = await fs.readFile(file, 'utf8');
    const labels = '{set="etc-nova",command="backup-files"}';
    const value = (text: string, name: string) =>
      Number(new RegExp(`^${name}${labels.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);
    assert.equal(value(first, 'lifeboat_run_success'), 1);
    assert.equal(value(first, 'lifeboat_bytes_stored'), Number(ok.result.outputs.bytes));
    assert.match(first, /^# TYPE lifeboat_last_success_timestamp_seconds gauge$/m);
    const success = value(first, 'lifeboat_last_success_timestamp_seconds');
    assert.ok(Math.abs(success - Date.now() / 1000) < 60);
    await run(
      command('backup-files'),
      backupInputs({ source: path.join(work, 'gone'), 'metrics-file': file }),
    );
    const second = await fs.readFile(file, 'utf8');
    assert.equal(value(second, 'lifeboat_run_success'), 0);
    assert.equal(value(second, 'lifeboat_last_success_timestamp_seconds'), success);
    assert.deepEqual(await fs.readdir(dir), ['lifeboat-etc-nova.prom'], 'no temporary file is left');
    await fs.rm(dir, { recursive: true });
  });

  test('a folder that cannot be written is a warning, the backup succeeds', {
    skip: process.getuid?.() === 0 && 'root writes anywhere',
  }, async () => {
    const dir = await tempDir('textfile-ro');
    await fs.chmod(dir, 0o555);
    const ran = await run(
      command('backup-files'),
      backupInputs({ 'metrics-file': path.join(dir, 'x.prom') }),
    );
    assert.ok(ran.result);
    assert.match(ran.warnings.join('\n'), /metrics-file: not written: EACCES/);
    await fs.chmod(dir, 0o755);
    await fs.rm(dir, { recursive: true });
  });
});

describe('pushgateway-url: the real Prometheus Pushgateway, scraped back', {
  skip: !pushgatewayInstalled && 'prometheus-pushgateway is not installed',
}, () => {
  let gateway: Pushgateway;
  before(async () => {
    gateway = await startPushgateway();
  });
  after(() => gateway?.stop());

  const series = (name: string, set: string, cmd: string) =>
    `${name}{command="${cmd}",instance="",job="lifeboat",set="${set}"}`;

  test('a backup and a verification push their metrics per set and command', async () => {
    const ok = await run(command('backup-files'), backupInputs({ 'pushgateway-url': gateway.url }));
    assert.ok(ok.result);
    const verify = await run(command('verify-restore'), {
      storage,
      set: 'etc-nova',
      'work-dir': work,
      'allow-unencrypted': 'true',
      'max-age': '1h',
      'pushgateway-url': `${gateway.url}/`,
      'progress-interval': '1h',
    });
    assert.equal(verify.result?.outputs.passed, 'true');
    const samples = await gateway.scrape();
    assert.equal(samples.get(series('lifeboat_run_success', 'etc-nova', 'backup-files')), 1);
    assert.equal(
      samples.get(series('lifeboat_bytes_stored', 'etc-nova', 'backup-files')),
      Number(ok.result.outputs.bytes),
    );
    assert.equal(samples.get(series('lifeboat_verification_passed', 'etc-nova', 'verify-restore')), 1);
    assert.equal(
      samples.get(series('lifeboat_rto_seconds', 'etc-nova', 'verify-restore')),
      Number(verify.result!.outputs['rto-seconds']),
    );
    assert.ok((samples.get(series('lifeboat_rpo_seconds', 'etc-nova', 'verify-restore')) ?? -1) >= 0);
    assert.equal(samples.get(series('lifeboat_anomalies', 'etc-nova', 'backup-files')), 0);
  });

  test('a failed run keeps the last success time and sets run_success 0', async () => {
    const before = await gateway.scrape();
    const success = before.get(series('lifeboat_last_success_timestamp_seconds', 'etc-nova', 'backup-files'));
    assert.ok(success && success > 0);
    await run(
      command('backup-files'),
      backupInputs({ source: path.join(work, 'gone'), 'pushgateway-url': gateway.url }),
    );
    const samples = await gateway.scrape();
    assert.equal(samples.get(series('lifeboat_run_success', 'etc-nova', 'backup-files')), 0);
    assert.equal(
      samples.get(series('lifeboat_last_success_timestamp_seconds', 'etc-nova', 'backup-files')),
      success,
    );
  });

  test('a set name that is not path-safe is pushed base64-encoded and scraped back as written', async () => {
    const ran = await run(
      command('backup-files'),
      backupInputs({ set: 'etc.nova_2', 'pushgateway-url': gateway.url }),
    );
    assert.ok(ran.result, String(ran.error));
    assert.equal(
      (await gateway.scrape()).get(series('lifeboat_run_success', 'etc.nova_2', 'backup-files')),
      1,
    );
  });
});

describe('the job summary opens with the status line, on failure too', () => {
  test('a failed backup: the line names the set and the error, before the table', async () => {
    const failed = await runAction(
      'backup-files',
      {
        storage,
        set: 'etc-nova',
        source: path.join(work, 'gone'),
      },
      {},
    );
    assert.equal(failed.code, 1);
    const first = failed.summary.trim().split('\n')[0]!;
    assert.match(first, /<strong>etc-nova: backup-files FAILED: source: /);
  });

  test('a good backup: size and change against the previous one', async () => {
    const ok = await runAction(
      'backup-files',
      { storage, set: 'etc-nova', source, 'report-url': 'https://example.github.io/backups/' },
      {},
    );
    assert.equal(ok.code, 0, ok.stdout);
    assert.match(ok.summary, /Report: https:\/\/example\.github\.io\/backups\//);
    assert.match(ok.summary, /<strong>etc-nova: backup OK [\d.]+ [KMG]?i?B \(±0%\)<\/strong>/);
  });
});
