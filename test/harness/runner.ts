/**
 * Runs the built bundle exactly as a GitHub runner does (INPUT_* variables with the
 * action.yml defaults, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files, node24 on the entry
 * file) and as a user runs the CLI (bin/lifeboat.js). Always asynchronous: the storage
 * servers the child talks to run in the test process.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { tempDir } from './servers.ts';

export const repoRoot = path.resolve(import.meta.dirname, '../..');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
  outputs: Record<string, string>;
  summary: string;
  /** What the step saved for its post: step (GITHUB_STATE). */
  state: Record<string, string>;
}

/** The environment a step starts with: nothing of this process's secrets or cloud settings. */
export function baseEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    AWS_CONFIG_FILE: '/nonexistent',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    AWS_EC2_METADATA_DISABLED: 'true',
    ...extra,
  };
}

function spawnNode(
  args: string[],
  env: Record<string, string>,
  options: { cwd?: string; uid?: number; gid?: number } = {},
) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      env,
      cwd: options.cwd ?? repoRoot,
      uid: options.uid,
      gid: options.gid,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Parses the `name<<delimiter … delimiter` blocks that @actions/core writes to GITHUB_OUTPUT. */
export function parseOutputs(text: string): Record<string, string> {
  const outputs: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<=]+)<<(.+)$/.exec(lines[i]!);
    if (!m) continue;
    const value: string[] = [];
    for (i++; i < lines.length && lines[i] !== m[2]; i++) value.push(lines[i]!);
    outputs[m[1]!] = value.join('\n');
  }
  return outputs;
}

/**
 * Runs `actions/<name>` (or the umbrella action when name is undefined) with `inputs`; with
 * `post` set, runs its post: entry instead, given the state the main step saved.
 */
export async function runAction(
  name: string | undefined,
  inputs: Record<string, string>,
  env: Record<string, string>,
  options: { cwd?: string; uid?: number; gid?: number; post?: Record<string, string> } = {},
): Promise<Run> {
  const actionDir = name ? path.join(repoRoot, 'actions', name) : repoRoot;
  const action = parse(fs.readFileSync(path.join(actionDir, 'action.yml'), 'utf8'));
  const files = await tempDir('runner');
  fs.chmodSync(files, 0o777);
  const outputFile = path.join(files, 'output');
  const summaryFile = path.join(files, 'summary');
  const stateFile = path.join(files, 'state');
  fs.writeFileSync(stateFile, '', { mode: 0o666 });
  fs.writeFileSync(outputFile, '', { mode: 0o666 });
  fs.writeFileSync(summaryFile, '', { mode: 0o666 });
  fs.chmodSync(outputFile, 0o666);
  fs.chmodSync(summaryFile, 0o666);
  fs.chmodSync(stateFile, 0o666);
  const inputEnv: Record<string, string> = {};
  for (const [input, spec] of Object.entries(action.inputs as Record<string, { default?: string }>)) {
    const value = inputs[input] ?? spec.default ?? '';
    inputEnv[`INPUT_${input.replace(/ /g, '_').toUpperCase()}`] = value;
  }
  for (const input of Object.keys(inputs))
    if (!(input in action.inputs)) throw new Error(`${name ?? 'umbrella'} has no input ${input}`);
  const state = Object.fromEntries(Object.entries(options.post ?? {}).map(([k, v]) => [`STATE_${k}`, v]));
  const run = await spawnNode(
    [path.join(actionDir, options.post ? action.runs.post : action.runs.main)],
    {
      ...baseEnv(env),
      ...inputEnv,
      ...state,
      GITHUB_OUTPUT: outputFile,
      GITHUB_STEP_SUMMARY: summaryFile,
      GITHUB_STATE: stateFile,
      GITHUB_ACTIONS: 'true',
    },
    options,
  );
  const result = {
    ...run,
    outputs: parseOutputs(fs.readFileSync(outputFile, 'utf8')),
    summary: fs.readFileSync(summaryFile, 'utf8'),
    state: parseOutputs(fs.readFileSync(stateFile, 'utf8')),
  };
  fs.rmSync(files, { recursive: true, force: true });
  return result;
}

/** Runs `lifeboat <args>` through bin/lifeboat.js. */
export async function runCli(
  args: string[],
  env: Record<string, string>,
  options: { cwd?: string } = {},
): Promise<Run> {
  const run = await spawnNode([path.join(repoRoot, 'bin/lifeboat.js'), ...args], baseEnv(env), options);
  return { ...run, outputs: {}, summary: '', state: {} };
}

/** The `::error::` lines a step printed. */
export function errorLines(run: Run): string[] {
  return run.stdout.split('\n').filter((l) => l.startsWith('::error::'));
}
