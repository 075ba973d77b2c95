/**
 * status, the freshness gate: through the command as the action and the CLI run it, on a real
 * folder and on an S3 server (fauxqs), with backups and verification records at chosen times.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { describeFailure, exitCodeOf, makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { statusCommand } from '../../shared/commands/status.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import { backupFolder } from '../harness/catalog.ts';
import { startFauxqs, startFolder, type TestServer, tempDir } from '../harness/servers.ts';

let work: string;
let source: string;
before(async () => {
  work = await tempDir('status');
  source = path.join(work, 'source');
  await fs.mkdir(source);
  await fs.writeFile(path.join(source, 'app.conf'), 'listen = 8080\n');
});
after(() => fs.rm(work, { recursive: true, force: true }));

type Outcome = CommandResult | { code: number; lines: string[] };

async function status(inputs: Record<string, string>): Promise<Outcome> {
  const c = statusCommand as unknown as Command<never>;
  try {
    return await runCommand(
      c,
      makeReader(c, (spec) => inputs[spec.name] ?? spec.default),
      silentLogger,
    );
  } catch (error) {
    const failure = describeFailure(error);
    return { code: exitCodeOf(failure), lines: failure.lines };
  }
}

const refused = (o: Outcome) => {
  assert.ok('code' in o, `refused: ${JSON.stringify(o)}`);
  return o;
};
const ran = (o: Outcome) => {
  assert.ok(!('code' in o), `ran: ${JSON.stringify(o)}`);
  return o;
};
const hoursAgo = (h: number) => new Date(Date.now() - h * 3_600_000);
const statusesOf = (r: CommandResult) =>
  Object.fromEntries(
    (JSON.parse(r.outputs.result!).sets as { set: string; status: string }[]).map((s) => [s.set, s.status]),
  );

for (const [name, start] of [
  ['fs', startFolder],
  ['fauxqs', startFauxqs],
] as const) {
  describe(`status on ${name}`, () => {
    let server: TestServer;
    let storage: Storage;
    let catalog: Catalog;
    before(async () => {
      server = await start();
      Object.assign(process.env, server.env);
      storage = openStorage(server.url, { ...process.env, ...server.env });
      catalog = new Catalog(storage);
    });
    after(() => server.stop());

    const record = async (set: string, backupId: string, at: Date, passed: boolean) =>
      catalog.recordVerification({
        format: 1,
        backupId,
        set,
        at: at.toISOString(),
        passed,
        checks: [{ name: 'sha256', passed }],
        tool: { name: 'lifeboat', version: '0.1.0' },
      });

    test('a storage that cannot be read is an error, never "no backups"; an empty one fails', async () => {
      const gone =
        name === 'fs'
          ? path.join(work, 'no-such-folder')
          : server.url.replace(/^s3:\/\/[^/]+/, 's3://lb-no-such-bucket');
      const missing = refused(await status({ storage: gone, 'max-age': '26h' }));
      assert.equal(missing.code, 1);
      assert.equal(missing.lines.length, 1, missing.lines.join('\n'));
      const emptyUrl = name === 'fs' ? path.join(work, 'empty-folder') : `${server.url}-empty`;
      if (name === 'fs') await fs.mkdir(emptyUrl);
      const empty = ran(await status({ storage: emptyUrl, 'max-age': '26h' }));
      assert.equal(empty.outputs.passed, 'false');
      assert.match(empty.failed!.join('\n'), /holds no sets: nothing is being backed up there/);
    });

    test('OK, STALE, FAILED, UNVERIFIED and MISSING, failures first, each named', async () => {
      const fresh = await backupFolder({ storage, set: 'fresh', source, now: () => hoursAgo(2) });
      await record('fresh', fresh.id, hoursAgo(1), true);
      const old = await backupFolder({ storage, set: 'stale', source, now: () => hoursAgo(30) });
      await record('stale', old.id, hoursAgo(29), true);
      const broken = await backupFolder({ storage, set: 'broken', source, now: () => hoursAgo(3) });
      await record('broken', broken.id, hoursAgo(2.5), true);
      await record('broken', broken.id, hoursAgo(1), false);
      const unproven = await backupFolder({ storage, set: 'unproven', source, now: () => hoursAgo(4) });
      await record('unproven', unproven.id, hoursAgo(24 * 10), true);
      await backupFolder({ storage, set: 'never', source, now: () => hoursAgo(1) });

      const everything = ran(await status({ storage: server.url, 'max-age': '26h', 'max-verify-age': '8d' }));
      assert.deepEqual(statusesOf(everything), {
        broken: 'FAILED',
        stale: 'STALE',
        unproven: 'UNVERIFIED',
        never: 'UNVERIFIED',
        fresh: 'OK',
      });
      assert.equal(everything.outputs.passed, 'false');
      assert.deepEqual(everything.outputs.failing!.split(',').sort(), [
        'broken',
        'never',
        'stale',
        'unproven',
      ]);
      const lines = everything.failed!;
      assert.equal(lines.length, 4, lines.join('\n'));
      assert.match(
        lines.find((l) => l.startsWith('stale: '))!,
        /^stale: STALE: the newest backup, .+, finished 30h0\dm ago, more than max-age 26h00m$/,
      );
      assert.match(lines.find((l) => l.startsWith('broken: '))!, /^broken: FAILED: the newest verification/);
      assert.match(
        lines.find((l) => l.startsWith('unproven: '))!,
        /ran 240h0\dm ago, more than max-verify-age 192h00m$/,
      );
      assert.match(
        lines.find((l) => l.startsWith('never: '))!,
        /^never: UNVERIFIED: no backup of the set was ever verified$/,
      );
      assert.deepEqual(
        everything.summary.table.slice(1).map((row) => row[1]),
        ['FAILED', 'STALE', 'UNVERIFIED', 'UNVERIFIED', 'OK'],
        'failures first, worst first',
      );

      // Without verification rules a verified-long-ago or never-verified set is OK; a failed one is not.
      const backedUp = ran(
        await status({ storage: server.url, set: 'fresh,never,unproven', 'max-age': '26h' }),
      );
      assert.equal(backedUp.outputs.passed, 'true');
      assert.equal(backedUp.failed, undefined);
      const named = ran(
        await status({
          storage: server.url,
          set: 'fresh,typo',
          'max-age': '26h',
          'require-verified': 'true',
        }),
      );
      assert.deepEqual(statusesOf(named), { typo: 'MISSING', fresh: 'OK' });
      assert.match(
        named.failed!.join('\n'),
        /^typo: MISSING: no such set in the storage \(sets here: .*fresh/,
      );
    });

    test('hostile storage: a future-dated backup, a damaged manifest and a damaged record never make a set look fresh or proven', async () => {
      // Whoever can write the bucket writes these; the gate must not count them.
      const future = await backupFolder({
        storage,
        set: 'h-future',
        source,
        now: () => new Date('2099-01-01T00:00:00Z'),
      });
      assert.ok(future.id);
      const older = await backupFolder({ storage, set: 'h-garbled', source, now: () => hoursAgo(30) });
      await record('h-garbled', older.id, hoursAgo(29), true);
      const newest = await backupFolder({ storage, set: 'h-garbled', source, now: () => hoursAgo(1) });
      await storage.putBytes(
        `h-garbled/${newest.id}/manifest.json`,
        Buffer.from('{"format": 1, "set": "h-garbled", "id": '),
      );
      const proven = await backupFolder({ storage, set: 'h-record', source, now: () => hoursAgo(1) });
      await storage.putBytes(
        `h-record/${proven.id}/verifications/2026-01-01T00-00-00.000Z.json`,
        Buffer.from('{"passed": true'),
      );
      const result = ran(
        await status({
          storage: server.url,
          set: 'h-future,h-garbled,h-record',
          'max-age': '26h',
          'require-verified': 'true',
        }),
      );
      assert.deepEqual(statusesOf(result), {
        'h-future': 'MISSING',
        'h-garbled': 'STALE',
        'h-record': 'UNVERIFIED',
      });
      const sets = JSON.parse(result.outputs.result!).sets as { set: string; notes: string[] }[];
      const notes = (set: string) => sets.find((s) => s.set === set)!.notes.join(' ');
      assert.match(notes('h-future'), /ahead|future/i);
      assert.match(notes('h-garbled'), /1 backup folder\(s\) with a manifest Lifeboat refuses, not counted/);
    });

    test('the report file holds the JSON of every set, written whole', async () => {
      const reportFile = path.join(work, `${name}-status.json`);
      const r = ran(
        await status({ storage: server.url, set: 'fresh', 'max-age': '26h', 'report-file': reportFile }),
      );
      const written = JSON.parse(await fs.readFile(reportFile, 'utf8'));
      assert.deepEqual(written, JSON.parse(r.outputs.result!));
      assert.equal(written.sets[0].status, 'OK');
      assert.equal(written.sets[0].backups, 1);
      assert.deepEqual(
        (await fs.readdir(work)).filter((f) => f.endsWith('.tmp')),
        [],
        'no temp file left',
      );
    });
  });
}

test('bad inputs get one line each, naming the input, and nothing is read', async () => {
  const folder = `file://${work}`;
  const noMaxAge = refused(await status({ storage: folder }));
  assert.equal(noMaxAge.code, 1);
  assert.match(noMaxAge.lines.join('\n'), /max-age/);
  const bad = refused(
    await status({
      storage: folder,
      'max-age': 'soon',
      'max-verify-age': '-1d',
      set: 'a,*',
      'require-verified': 'maybe',
    }),
  );
  assert.equal(bad.code, 1);
  for (const input of ['max-age', 'max-verify-age', 'set', 'require-verified'])
    assert.ok(
      bad.lines.some((l) => l.includes(input)),
      `${input} is named: ${bad.lines.join('\n')}`,
    );
});
