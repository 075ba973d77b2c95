/**
 * Notifications and metrics for every command: `withSignals(command)` adds notify-url (a
 * healthchecks.io-style ping: /start, then the URL or /fail), webhook-url (Slack-compatible
 * `{"text": …}` on failure, and on success with webhook-on-success), metrics-file (Prometheus
 * text, written atomically for node-exporter's textfile collector) and pushgateway-url. None of
 * them blocks or fails the command: each request is bounded and retried once, then a warning.
 * notify-url and webhook-url are secrets: masked, never flags, never logged.
 */

import { statSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { InputCollector, InputErrors, parseBoolean, parseCollecting } from '../action/inputs.ts';
import type { Command, CommandResult, InputReader, InputSpec } from '../action/spec.ts';
import { messageOf, UserError } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import { writeAtomically } from '../write-atomically.ts';
import { findSample, metricsText, type Sample } from './prometheus.ts';
import { defaultPolicy, type SendPolicy, send } from './send.ts';
import {
  anomaliesOf,
  numberOutput,
  type RunOutcome,
  setInputOf,
  statusLine,
  storedBytes,
} from './status-line.ts';

export const signalInputs: InputSpec[] = [
  {
    name: 'notify-url',
    description:
      'A healthchecks.io-style ping URL: POST <url>/start when the work starts, <url> on success, <url>/fail on failure, with a short text body (secret; on the CLI only from LIFEBOAT_NOTIFY_URL).',
    secretEnv: 'LIFEBOAT_NOTIFY_URL',
  },
  {
    name: 'webhook-url',
    description:
      'A Slack-compatible incoming webhook: JSON {"text": …} on failure (secret; on the CLI only from LIFEBOAT_WEBHOOK_URL).',
    secretEnv: 'LIFEBOAT_WEBHOOK_URL',
  },
  { name: 'webhook-on-success', description: 'true: post to webhook-url on success too.', default: 'false' },
  {
    name: 'metrics-file',
    description:
      "Write Prometheus metrics here (text format, atomically: a temp file in the same folder, then renamed), e.g. for node-exporter's textfile collector; one file per set and command.",
  },
  {
    name: 'report-url',
    description:
      'A link to your Lifeboat report (where the page `lifeboat report` writes is published, e.g. GitHub Pages): the job summary and the notifications end with it.',
  },
  {
    name: 'pushgateway-url',
    description:
      'Push the metrics to this Prometheus Pushgateway (PUT <url>/metrics/job/lifeboat/set/<set>/command/<command>).',
  },
];

export interface SignalOptions {
  set: string;
  notifyUrl?: string;
  webhookUrl?: string;
  webhookOnSuccess: boolean;
  metricsFile?: string;
  pushgatewayUrl?: string;
  reportUrl?: string;
}

/** An http(s) URL without credentials; the message never repeats the value (it may be a secret). */
function parseUrl(name: string, value: string | undefined): string | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw new UserError(`${name}: not a URL; accepted: an http:// or https:// URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new UserError(
      `${name}: the scheme ${url.protocol} is not accepted; accepted: an http:// or https:// URL`,
    );
  if (url.username || url.password)
    throw new UserError(
      `${name}: credentials in the URL are not accepted; accepted: an http:// or https:// URL without user:password@`,
    );
  return url.href;
}

function parseMetricsFile(value: string | undefined): string | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  const file = path.resolve(v);
  let folder: boolean;
  try {
    folder = statSync(path.dirname(file)).isDirectory();
  } catch {
    folder = false;
  }
  if (!folder)
    throw new UserError(
      `metrics-file: the folder ${path.dirname(file)} does not exist; accepted: a file in an existing folder`,
    );
  try {
    if (statSync(file).isDirectory())
      throw new UserError(`metrics-file: ${file} is a folder; accepted: a file in an existing folder`);
  } catch (error) {
    if (error instanceof UserError) throw error;
  }
  return file;
}

export function parseSignals(read: InputReader, c: InputCollector, set: string): SignalOptions {
  return {
    set,
    notifyUrl: c.field(() => parseUrl('notify-url', read('notify-url'))),
    webhookUrl: c.field(() => parseUrl('webhook-url', read('webhook-url'))),
    webhookOnSuccess: c.field(() => parseBoolean('webhook-on-success', read('webhook-on-success'), false)),
    metricsFile: c.field(() => parseMetricsFile(read('metrics-file'))),
    pushgatewayUrl: c.field(() => parseUrl('pushgateway-url', read('pushgateway-url'))),
    reportUrl: c.field(() => parseUrl('report-url', read('report-url'))),
  };
}

/** The command with the signal inputs: its own inputs are parsed and refused together with them. */
export function withSignals(command: Command<never>, policy: SendPolicy = defaultPolicy): Command<never> {
  return {
    ...command,
    inputs: [...command.inputs, ...signalInputs],
    parse(read) {
      const { options, lines } = parseCollecting(() => command.parse(read));
      const c = new InputCollector();
      const signals = parseSignals(read, c, setInputOf(command, read));
      try {
        c.finish();
      } catch (error) {
        lines.push(...(error as InputErrors).lines);
      }
      if (lines.length) throw new InputErrors(lines);
      return { ...(options as object | undefined), signals } as never;
    },
    async execute(options, context) {
      const { signals, ...own } = options as unknown as { signals: SignalOptions };
      const run = new Signals(command.name, signals, context.logger, policy);
      try {
        const ownResult = await command.execute(own as never, context);
        const result = signals.reportUrl
          ? {
              ...ownResult,
              summary: {
                ...ownResult.summary,
                notes: [...(ownResult.summary.notes ?? []), `Report: ${signals.reportUrl}`],
              },
            }
          : ownResult;
        await run.finish(result, undefined);
        return result;
      } catch (error) {
        const thrown = context.signal.aborted ? context.signal.reason : error;
        await run.finish(undefined, thrown);
        throw error;
      }
    },
  };
}

class Signals {
  readonly command: string;
  readonly options: SignalOptions;
  readonly logger: Logger;
  readonly policy: SendPolicy;
  readonly started = Date.now();
  /** The /start ping, sent (when asked) while the work goes on; the final ping waits for it. */
  readonly starting: Promise<void>;
  constructor(command: string, options: SignalOptions, logger: Logger, policy: SendPolicy) {
    this.command = command;
    this.options = options;
    this.logger = logger;
    this.policy = policy;
    const url = options.notifyUrl;
    this.starting = url
      ? this.post('notify-url', suffixed(url, '/start'), `${command} started\n`, 'text/plain')
      : Promise.resolve();
  }

  private async post(
    input: string,
    url: string,
    body: string,
    contentType: string,
    method: 'POST' | 'PUT' = 'POST',
  ) {
    const problem = await send({ url, method, body, contentType }, this.policy);
    if (problem)
      this.logger.warn(`${input}: not delivered: ${problem}; the command's result is not affected`);
  }

  async finish(result: CommandResult | undefined, error: unknown) {
    const failed =
      error !== undefined ? [messageOf(error)] : result?.failed?.length ? result.failed : undefined;
    const outcome: RunOutcome = {
      command: this.command,
      set: this.options.set,
      outputs: result?.outputs,
      failed,
    };
    const line = statusLine([outcome]);
    const seconds = (Date.now() - this.started) / 1000;
    const work: Promise<void>[] = [];
    const { notifyUrl, webhookUrl, metricsFile, pushgatewayUrl } = this.options;
    if (notifyUrl)
      work.push(
        this.starting.then(() =>
          this.post(
            'notify-url',
            failed ? suffixed(notifyUrl, '/fail') : notifyUrl,
            pingBody(line, outcome, seconds, this.options.reportUrl),
            'text/plain',
          ),
        ),
      );
    if (webhookUrl && (failed || this.options.webhookOnSuccess))
      work.push(
        this.post(
          'webhook-url',
          webhookUrl,
          JSON.stringify({
            text:
              slackEscape(line) +
              (this.options.reportUrl ? `\n<${this.options.reportUrl.replace(/\|/g, '%7C')}|report>` : ''),
          }),
          'application/json',
        ),
      );
    const labels = { set: this.options.set || '*', command: this.command };
    if (metricsFile) work.push(this.writeMetrics(metricsFile, outcome, seconds, labels));
    if (pushgatewayUrl) {
      const samples = samplesOf(outcome, seconds, undefined).filter(
        (s) => !failed || s.name !== 'lifeboat_last_success_timestamp_seconds',
      );
      // A success replaces the group (PUT: no stale series); a failure replaces only what it
      // measured (POST), so that the last success's timestamp stays.
      work.push(
        this.post(
          'pushgateway-url',
          groupUrl(pushgatewayUrl, labels),
          metricsText(samples, labels),
          'text/plain; version=0.0.4',
          failed ? 'POST' : 'PUT',
        ),
      );
    }
    await Promise.all(work);
  }

  private async writeMetrics(
    file: string,
    outcome: RunOutcome,
    seconds: number,
    labels: Record<string, string>,
  ) {
    const previous = await fs.readFile(file, 'utf8').catch(() => '');
    const lastSuccess = findSample(previous, 'lifeboat_last_success_timestamp_seconds', labels);
    const text = metricsText(samplesOf(outcome, seconds, lastSuccess), labels);
    try {
      await writeAtomically(file, text);
    } catch (error) {
      this.logger.warn(
        `metrics-file: not written: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}; the command's result is not affected`,
      );
    }
  }
}

/** <url>/start, <url>/fail: the suffix added to the path, the query kept. */
function suffixed(url: string, suffix: string): string {
  const u = new URL(url);
  u.pathname = `${u.pathname.replace(/\/+$/, '')}${suffix}`;
  return u.href;
}

/** A grouping label value in a Pushgateway path: as it is when safe, else base64url. */
function pathLabel(name: string, value: string): string {
  if (/^[A-Za-z0-9._-]+$/.test(value)) return `${name}/${value}`;
  return `${name}@base64/${Buffer.from(value).toString('base64url') || '='}`;
}

function groupUrl(base: string, labels: Record<string, string>): string {
  const u = new URL(base);
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/metrics/job/lifeboat/${pathLabel('set', labels.set!)}/${pathLabel('command', labels.command!)}`;
  return u.href;
}

/** Slack's mrkdwn: &, < and > escaped, so that text from a backup cannot make a link or mention. */
const slackEscape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function pingBody(line: string, outcome: RunOutcome, seconds: number, reportUrl?: string): string {
  const o = outcome.outputs;
  const rows = [
    line,
    `command: ${outcome.command}`,
    `set: ${outcome.set || '*'}`,
    ...(o?.['backup-id'] ? [`backup: ${o['backup-id']}`] : []),
    ...(storedBytes(o) !== undefined ? [`bytes: ${storedBytes(o)}`] : []),
    ...(numberOutput(o, 'rto-seconds') !== undefined ? [`rto-seconds: ${o!['rto-seconds']}`] : []),
    ...(numberOutput(o, 'rpo-seconds') !== undefined ? [`rpo-seconds: ${o!['rpo-seconds']}`] : []),
    `duration-seconds: ${seconds.toFixed(1)}`,
    ...(outcome.failed ?? []).map((l) => `error: ${l}`),
    ...(reportUrl ? [`report: ${reportUrl}`] : []),
  ];
  return `${rows.join('\n')}\n`.slice(0, 10_000);
}

/** The metrics of a run; `lastSuccess` is kept from before when this run failed. */
export function samplesOf(outcome: RunOutcome, seconds: number, lastSuccess: number | undefined): Sample[] {
  const now = Date.now() / 1000;
  const ok = !outcome.failed;
  const o = outcome.outputs;
  const samples: Sample[] = [];
  const add = (name: string, help: string, value: number | undefined) => {
    if (value !== undefined) samples.push({ name, help, value });
  };
  add(
    'lifeboat_last_success_timestamp_seconds',
    'When the command last succeeded (Unix time).',
    ok ? now : lastSuccess,
  );
  add('lifeboat_last_run_timestamp_seconds', 'When the command last ran (Unix time).', now);
  add('lifeboat_run_success', '1 when the last run succeeded, else 0.', ok ? 1 : 0);
  add(
    'lifeboat_duration_seconds',
    'How long the last run took.',
    numberOutput(o, 'duration-seconds') ?? seconds,
  );
  add(
    'lifeboat_bytes_stored',
    'Bytes the last backup stored.',
    outcome.command.startsWith('backup-') ||
      outcome.command.startsWith('snapshot-') ||
      outcome.command === 'dump-mysql'
      ? storedBytes(o)
      : undefined,
  );
  add('lifeboat_rto_seconds', 'How long the last verified restore took.', numberOutput(o, 'rto-seconds'));
  add('lifeboat_rpo_seconds', "The verified backup's age when verified.", numberOutput(o, 'rpo-seconds'));
  add(
    'lifeboat_verification_passed',
    '1 when the last verification passed, else 0.',
    o?.passed === 'true' ? 1 : o?.passed === 'false' ? 0 : undefined,
  );
  add('lifeboat_anomalies', 'How many anomalies the last run found.', anomaliesOf(o)?.length);
  return samples;
}
