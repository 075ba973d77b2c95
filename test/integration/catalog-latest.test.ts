/**
 * Nothing lost silently, in the catalog: which backup `latest` is, what `list` shows and
 * what prune's newest rule protects when a backup is dated ahead of the clock or its
 * manifest (or verification record) is damaged, and a set name that is a typo. Through the
 * commands, on a real folder and on an S3 server.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { describeFailure, exitCodeOf, makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { listCatalog, listCommand } from '../../shared/commands/list.ts';
import { pruneRetentionCommand } from '../../shared/commands/prune-retention.ts';
import { restoreCommand } from '../../shared/commands/restore.ts';
import { type Logger, silentLogger } from '../../shared/pipeline/progress.ts';
import { prune } from '../../shared/retention/prune.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import { backupFolder } from '../harness/catalog.ts';
import { startFauxqs, startFolder, type TestServer, tempDir } from '../harness/servers.ts';

let work: string;
let source: string;
before(async () => {
  work = await tempDir('catalog-latest');
  source = path.join(work, 'source');
  await fs.mkdir(source);
  await fs.writeFile(path.join(source, 'app.conf'), 'listen = 8080\n');
});
after(() => fs.rm(work, { recursive: true, force: true }));

/** Runs a command as the action and the CLI do; a failure comes back as its exit status and lines. */
async function run(
  command: unknown,
  inputs: Record<string, string>,
  logger: Logger = silentLogger,
): Promise<CommandResult | { code: number; lines: string[] }> {
  const c = command as Command<never>;
  try {
    return await runCommand(
      c,
      makeReader(c, (spec) => inputs[spec.name] ?? spec.default),
      logger,
    );
  } catch (error) {
    const failure = describeFailure(error);
    return { code: exitCodeOf(failure), lines: failure.lines };
  }
}

function failed(result: Awaited<ReturnType<typeof run>>): { code: number; lines: string[] } {
  assert.ok('code' in result, `the command failed: ${JSON.stringify(result)}`);
  return result;
}

function succeeded(result: Awaited<ReturnType<typeof run>>): CommandResult {
  assert.ok(!('code' in result), `the command succeeded: ${JSON.stringify(result)}`);
  return result;
}

const day = (d: number) => new Date(Date.UTC(2026, 10, d, 3, 15));
const idOf = (d: number) => `2026-11-${String(d).padStart(2, '0')}-0315-backup-full`;
const warnings = () => {
  const lines: string[] = [];
  return { lines, logger: { info() {}, warn: (m: string) => lines.push(m) } as Logger };
};

for (const [name, start] of [
  ['fs', startFolder],
  ['fauxqs', startFauxqs],
] as const) {
  describe(`on ${name}`, () => {
    let server: TestServer;
    let storage: Storage;
    let url: string;
    let env: NodeJS.ProcessEnv;
    before(async () => {
      server = await start();
      url = server.url;
      env = { ...process.env, ...server.env };
      Object.assign(process.env, server.env);
      storage = openStorage(url, env);
    });
    after(() => server.stop());

    test('a backup dated ahead of the clock is never latest; list warns; it restores by its id', async () => {
      const set = 'clock';
      await backupFolder({ storage, set, source, now: () => day(20) });
      const real = await backupFolder({ storage, set, source, now: () => new Date(Date.now() - 60_000) });
      // A runner whose clock ran a year ahead.
      const future = await backupFolder({
        storage,
        set,
        source,
        now: () => new Date(Date.now() + 366 * 86_400_000),
      });
      const catalog = new Catalog(storage);
      const heard: string[] = [];
      const latest = await catalog.resolve(set, 'latest', { warn: (m) => heard.push(m) });
      assert.equal(latest.id, real.id);
      assert.equal(heard.length, 1);
      assert.match(
        heard[0]!,
        new RegExp(
          `^backup ${set}/${future.id} is dated ahead of this machine's clock \\(.*\\) by more than 5 minutes`,
        ),
      );
      const target = path.join(work, `${name}-clock`);
      const restored = succeeded(await run(restoreCommand, { storage: url, set, target, 'dry-run': 'true' }));
      assert.equal(restored.outputs['backup-id'], real.id, 'restore latest takes the real newest');
      const byId = succeeded(
        await run(restoreCommand, { storage: url, set, backup: future.id, target, 'dry-run': 'true' }),
      );
      assert.equal(byId.outputs['backup-id'], future.id);

      const listing = await listCatalog(catalog, set);
      assert.deepEqual(
        listing.backups.map((b) => [b.id, b.aheadOfClock]),
        [
          [future.id, true],
          [real.id, false],
          [idOf(20), false],
        ],
      );
      const { lines, logger } = warnings();
      const listed = succeeded(await run(listCommand, { storage: url, set }, logger));
      assert.ok(
        lines.some((l) => l.startsWith(`${set}/${future.id} is dated ahead of this machine's clock`)),
      );
      assert.ok(listed.summary.notes?.some((n) => n.includes(`never taken as latest: ${set}/${future.id}`)));

      // prune: the newest rule protects the real newest; keep-within counts from it.
      const report = await prune({
        storage,
        sets: [set],
        policy: {
          tags: ['none-has-this'],
          timezone: 'UTC',
          keepVerified: 0,
          minKeep: 1,
          orphanGraceSeconds: 86_400,
        },
        dryRun: true,
        logger: silentLogger,
      });
      const plan = report.sets[0]!.plan;
      assert.deepEqual(
        plan.backups.map((b) => [b.id, b.keep, b.aheadOfClock]),
        [
          [future.id, false, true],
          [real.id, true, false],
          [idOf(20), false, false],
        ],
      );
      assert.deepEqual(plan.backups[1]!.reasons.sort(), ['min-keep', 'newest']);
      const pruneLog = warnings();
      const pruned = succeeded(
        await run(
          pruneRetentionCommand,
          { storage: url, set, 'keep-last': '1', 'dry-run': 'true' },
          pruneLog.logger,
        ),
      );
      assert.ok(
        pruneLog.lines.some((l) =>
          l.startsWith(`${set}: ${future.id} is dated ahead of this machine's clock by more than 5 minutes`),
        ),
        pruneLog.lines.join('\n'),
      );
      assert.match(
        pruned.summary.notes!.join('\n'),
        new RegExp(`not taken as the newest backup, which is ${real.id}`),
      );
    });

    test('when every backup is ahead of the clock, latest refuses and names them', async () => {
      const set = 'all-ahead';
      const future = await backupFolder({
        storage,
        set,
        source,
        now: () => new Date(Date.now() + 86_400_000),
      });
      const result = failed(
        await run(restoreCommand, { storage: url, set, target: path.join(work, `${name}-ahead`) }),
      );
      assert.equal(result.code, 1);
      assert.match(
        result.lines[0]!,
        new RegExp(
          `^backup: every committed backup of set '${set}' is dated ahead of this machine's clock .* by more than 5 minutes: ${future.id}; latest never picks such a backup`,
        ),
      );
    });

    test('latest refuses a damaged newest backup and names the newest intact one, which restores by id', async () => {
      const set = 'damaged';
      for (const d of [18, 19, 20, 21]) await backupFolder({ storage, set, source, now: () => day(d) });
      await storage.putBytes(`${set}/${idOf(21)}/manifest.json`, Buffer.from('{"format":1, "id": "trunc'));
      await storage.putBytes(`${set}/${idOf(20)}/manifest.json`, Buffer.from('{"format": 2}'));
      const target = path.join(work, `${name}-damaged`);
      const latest = failed(await run(restoreCommand, { storage: url, set, target, 'dry-run': 'true' }));
      assert.equal(latest.code, 1, 'the backup is at fault, not Lifeboat: exit status 1');
      assert.deepEqual(latest.lines, [
        `backup ${set}/${idOf(21)} in ${storage.url}: manifest.json is not valid JSON. That is the newest backup of set '${set}' (${idOf(21)}), and latest does not pass over it silently: the newest intact backup is ${idOf(19)}; restore it with backup: ${idOf(19)}`,
      ]);
      const byId = succeeded(
        await run(restoreCommand, { storage: url, set, target, backup: idOf(19), 'dry-run': 'true' }),
      );
      assert.equal(byId.outputs['backup-id'], idOf(19));
      const newer = failed(await run(restoreCommand, { storage: url, set, target, backup: idOf(20) }));
      assert.deepEqual(
        [newer.code, newer.lines],
        [
          1,
          [
            `backup ${set}/${idOf(20)} in ${storage.url}: manifest format 2 is newer than this Lifeboat understands (1); upgrade Lifeboat`,
          ],
        ],
      );
      await assert.rejects(fs.stat(target), { code: 'ENOENT' }, 'nothing was written');
    });

    test('list marks each damaged manifest and lists every other backup of every set', async () => {
      const set = 'mixed';
      const bodies = ['', 'not json', 'null', '[]', '{"format":1}', '{"format":"1"}', '{"format":3}'];
      for (const [i] of bodies.entries()) await backupFolder({ storage, set, source, now: () => day(1 + i) });
      const good = await backupFolder({ storage, set, source, now: () => day(10) });
      for (const [i, body] of bodies.entries())
        await storage.putBytes(`${set}/${idOf(1 + i)}/manifest.json`, Buffer.from(body));
      const { lines, logger } = warnings();
      const result = succeeded(await run(listCommand, { storage: url }, logger));
      const listing = JSON.parse(result.outputs.result!);
      assert.deepEqual(
        listing.backups.filter((b: { set: string }) => b.set === set).map((b: { id: string }) => b.id),
        [good.id],
      );
      assert.deepEqual(
        listing.damaged.filter((d: { set: string }) => d.set === set).map((d: { id: string }) => d.id),
        bodies.map((_, i) => idOf(1 + i)).reverse(),
      );
      assert.ok(
        listing.backups.some((b: { set: string }) => b.set === 'damaged'),
        'the other sets are listed',
      );
      for (const [i] of bodies.entries())
        assert.ok(
          lines.some((l) => l.startsWith(`not listed: ${set}/${idOf(1 + i)}: backup ${set}/${idOf(1 + i)}`)),
        );
      // In the table, in place, marked.
      const rows = result.summary.table.filter((r) => r[0] === set);
      assert.deepEqual(
        rows.map((r) => [r[1], r[2]]),
        [[good.id, 'files'], ...bodies.map((_, i) => [idOf(1 + i), 'DAMAGED']).reverse()],
      );
    });

    test('a damaged verification record does not fail list or prune: it proves nothing', async () => {
      const set = 'records';
      const older = await backupFolder({ storage, set, source, now: () => day(20) });
      const newer = await backupFolder({ storage, set, source, now: () => day(21) });
      const catalog = new Catalog(storage);
      await catalog.recordVerification({
        format: 1,
        backupId: older.id,
        set,
        at: '2026-11-20T12:00:00.000Z',
        passed: true,
        checks: [],
        tool: { name: 'lifeboat', version: '0' },
      });
      await storage.putBytes(
        `${set}/${newer.id}/verifications/2026-11-21T12-00-00-000Z.json`,
        Buffer.from('garbage'),
      );
      await storage.putBytes(
        `${set}/${older.id}/verifications/2026-11-21T12-00-00-000Z.json`,
        Buffer.from('{}'),
      );
      const { lines, logger } = warnings();
      const result = succeeded(await run(listCommand, { storage: url, set }, logger));
      const listing = JSON.parse(result.outputs.result!);
      assert.deepEqual(
        listing.backups.map((b: { id: string; lastVerification: unknown; verificationDamaged?: string }) => [
          b.id,
          b.lastVerification,
          b.verificationDamaged,
        ]),
        [
          [
            newer.id,
            null,
            `the verification record ${set}/${newer.id}/verifications/2026-11-21T12-00-00-000Z.json is damaged: it is not valid JSON`,
          ],
          [
            older.id,
            null,
            `the verification record ${set}/${older.id}/verifications/2026-11-21T12-00-00-000Z.json is damaged: invalid at format: Invalid input: expected 1`,
          ],
        ],
      );
      assert.equal(lines.length, 2);
      assert.deepEqual(
        result.summary.table.slice(1).map((r) => r[6]),
        ['DAMAGED record', 'DAMAGED record'],
      );
      const pruned = succeeded(
        await run(pruneRetentionCommand, { storage: url, set, 'keep-last': '1', 'dry-run': 'true' }),
      );
      const plan = JSON.parse(pruned.outputs.result!).sets[0].plan;
      assert.deepEqual(
        plan.backups.map((b: { id: string; keep: boolean }) => [b.id, b.keep]),
        [
          [newer.id, true],
          [older.id, false],
        ],
        'the damaged record does not count as a passed verification',
      );
    });

    test('a set name that is a typo is refused, naming the sets that exist', async () => {
      const listed = failed(await run(listCommand, { storage: url, set: 'clokc' }));
      assert.equal(listed.code, 1);
      assert.match(
        listed.lines[0]!,
        new RegExp(
          `^set: 'clokc' is not a set in ${storage.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}; sets here: .*\\bclock\\b`,
        ),
      );
      const pruned = failed(
        await run(pruneRetentionCommand, {
          storage: url,
          set: 'clock, clokc',
          'keep-last': '1',
          'dry-run': 'false',
        }),
      );
      assert.equal(pruned.code, 1);
      assert.match(pruned.lines[0]!, /^set: 'clokc' is not a set in .*; sets here: .*\bclock\b/);
      assert.equal(
        (await new Catalog(storage).listBackups('clock')).filter((b) => b.committed).length,
        3,
        'nothing was pruned',
      );
    });
  });
}
