import type { Manifest } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import type { StatementHandler, StatementKind } from './sql-stream.ts';
import { useDatabase } from './sql-stream.ts';
import { createdDatabase, createdObject, tableEngine } from './statements.ts';

/** What one database of a dump holds: exact row counts per table and its other objects. */
export interface DatabaseFacts {
  name: string;
  /** The character set clause of its CREATE DATABASE, e.g. `DEFAULT CHARACTER SET latin1 …`. */
  options: string;
  /** Rows per table, counted in the dump itself. */
  tables: Record<string, number>;
  views: string[];
  procedures: string[];
  functions: string[];
  triggers: string[];
  events: string[];
  /** Tables whose engine has no transactions (MyISAM, Aria, …): not part of the snapshot. */
  nonTransactional: string[];
}

export interface BinlogPosition {
  file: string;
  position: number;
  gtid?: string;
}

export interface MysqlFacts {
  server: { flavour: 'mariadb' | 'mysql'; version: string };
  dumper: string;
  binlog: BinlogPosition | null;
  databases: DatabaseFacts[];
  totals: {
    databases: number;
    tables: number;
    rows: number;
    views: number;
    routines: number;
    triggers: number;
    events: number;
  };
}

const transactional = new Set(['innodb', 'rocksdb', 'tokudb', 'ndbcluster', 'ndb']);

/**
 * Reads a dump as it streams past and gathers the facts verify-restore checks: per database
 * the tables and their exact row counts (counted in the dump, so they are what the backup
 * holds), views, routines, triggers and events, and the binary log position.
 */
export class DumpFacts implements StatementHandler {
  readonly databases: DatabaseFacts[] = [];
  binlog: BinlogPosition | null = null;
  /** Whether the dumper's closing line came: a dump without it is incomplete. */
  completed = false;
  private current: DatabaseFacts | undefined;
  private table: string | undefined;
  private gtid: string | undefined;

  statement(text: string, kind: StatementKind): void {
    if (kind === 'comment') {
      this.comment(text);
      return;
    }
    if (kind !== 'statement') return;
    const created = createdDatabase(text);
    if (created) {
      if (!this.byName(created.name)) this.databases.push(emptyDatabase(created.name, created.options));
      return;
    }
    const use = useDatabase(text);
    if (use !== undefined) {
      this.current = this.byName(use) ?? this.add(emptyDatabase(use, ''));
      return;
    }
    const object = createdObject(text);
    if (!object) return;
    const db = this.current ?? this.add(emptyDatabase('', ''));
    switch (object.type) {
      case 'table': {
        db.tables[object.name] ??= 0;
        const engine = tableEngine(text);
        if (engine && !transactional.has(engine.toLowerCase()))
          db.nonTransactional.push(`${object.name} (${engine})`);
        break;
      }
      case 'view':
        addOnce(db.views, object.name);
        break;
      case 'trigger':
        addOnce(db.triggers, object.name);
        break;
      case 'procedure':
        addOnce(db.procedures, object.name);
        break;
      case 'function':
        addOnce(db.functions, object.name);
        break;
      case 'event':
        addOnce(db.events, object.name);
        break;
    }
  }

  dataStart(table: string): void {
    this.table = table;
  }

  dataPiece(): void {}

  dataEnd(rows: number): void {
    const db = this.current;
    if (!db || this.table === undefined) throw new UserError('the dump has data outside a database');
    db.tables[this.table] = (db.tables[this.table] ?? 0) + rows;
  }

  private comment(text: string) {
    if (text.startsWith('-- Dump completed')) this.completed = true;
    const position = /(?:MASTER|SOURCE)_LOG_FILE='([^']+)',\s*(?:MASTER|SOURCE)_LOG_POS=(\d+)/.exec(text);
    if (position) this.binlog = { file: position[1]!, position: Number(position[2]), gtid: this.gtid };
    const gtid = /gtid_slave_pos='([^']*)'|GTID_PURGED=(?:\/\*!\d+ '\+'\*\/ )?'([^']*)'/i.exec(text);
    if (gtid) {
      this.gtid = gtid[1] ?? gtid[2];
      if (this.binlog) this.binlog.gtid = this.gtid;
    }
  }

  private byName(name: string) {
    return this.databases.find((d) => d.name === name);
  }

  private add(db: DatabaseFacts) {
    this.databases.push(db);
    return db;
  }

  totals(): MysqlFacts['totals'] {
    const sum = (f: (d: DatabaseFacts) => number) => this.databases.reduce((n, d) => n + f(d), 0);
    return {
      databases: this.databases.length,
      tables: sum((d) => Object.keys(d.tables).length),
      rows: sum((d) => Object.values(d.tables).reduce((a, b) => a + b, 0)),
      views: sum((d) => d.views.length),
      routines: sum((d) => d.procedures.length + d.functions.length),
      triggers: sum((d) => d.triggers.length),
      events: sum((d) => d.events.length),
    };
  }
}

function emptyDatabase(name: string, options: string): DatabaseFacts {
  return {
    name,
    options,
    tables: {},
    views: [],
    procedures: [],
    functions: [],
    triggers: [],
    events: [],
    nonTransactional: [],
  };
}

function addOnce(list: string[], name: string) {
  if (!list.includes(name)) list.push(name);
}

/** The MySQL facts of a manifest, checked enough to use (the manifest schema keeps facts open). */
export function mysqlFacts(manifest: Manifest): MysqlFacts {
  const facts = manifest.facts as unknown as MysqlFacts;
  if (manifest.kind !== 'mysql' || !Array.isArray(facts?.databases)) {
    throw new UserError(`backup: '${manifest.id}' is not a MySQL backup with database facts`);
  }
  return facts;
}
