#!/usr/bin/env bash
# A whole backup drill on local defaults, with the built CLI: make a sample configuration
# folder, back it up encrypted into ./backups, list, restore into a new folder, compare,
# verify-restore it and pass the freshness gate;
# then the MySQL drill (scripts/mysql-drill.ts): dump, restore and verify-restore on throwaway MariaDB servers.
# Runs in .drill/ (removed first); called by `npm run drill` after setup and build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
drill="$root/.drill"
rm -rf "$drill"
mkdir -p "$drill/sample/nova/conf.d" "$drill/sample/nova/empty"
cd "$drill"
lifeboat() { node "$root/bin/lifeboat.js" "$@"; }

printf '[DEFAULT]\ndebug = false\ntransport_url = rabbit://nova@controller\n' > sample/nova/nova.conf
printf '[api]\nauth_strategy = keystone\n' > sample/nova/conf.d/01-api.conf
: > sample/nova/empty.conf
ln -s nova.conf sample/nova/current.conf
chmod 640 sample/nova/nova.conf
head -c 20000000 /dev/urandom > sample/nova/policy.bin

echo "== an age key pair: the backup needs only the public key, a restore needs the identity"
identity=$(cd "$root" && node -e "import('age-encryption').then(async (a) => console.log(await a.generateIdentity()))")
recipient=$(cd "$root" && LIFEBOAT_ID="$identity" node -e "import('age-encryption').then(async (a) => console.log(await a.identityToRecipient(process.env.LIFEBOAT_ID)))")
echo "recipient: $recipient"

echo; echo "== lifeboat backup-files --set nova-config --source sample/nova --age-recipients …"
lifeboat backup-files --set nova-config --source sample/nova --age-recipients "$recipient"

echo; echo "== lifeboat list"
lifeboat list

echo; echo "== lifeboat restore --set nova-config --target restored/nova  (identity from LIFEBOAT_AGE_IDENTITY)"
LIFEBOAT_AGE_IDENTITY="$identity" lifeboat restore --set nova-config --target restored/nova

echo; echo "== compare the restored folder with the original"
diff -r --no-dereference sample/nova restored/nova
[ "$(stat -c %a sample/nova/nova.conf)" = "$(stat -c %a restored/nova/nova.conf)" ]
[ "$(readlink restored/nova/current.conf)" = "nova.conf" ]
echo "identical: contents, symlink, empty file and folder, modes"

echo; echo "== by hand, with standard tools: age -d | zstd -d | tar"
artifact=$(ls backups/nova-config/*/files.tar.zst.age)
echo "$artifact"
if command -v age >/dev/null && command -v zstd >/dev/null; then
  printf '%s\n' "$identity" > key.txt
  mkdir by-hand && age -d -i key.txt "$artifact" | zstd -dc | tar -x -C by-hand && diff -r --no-dereference sample/nova by-hand
  echo "restored by hand: identical"
else
  echo "(age or zstd is not installed here; see the README for the recipe)"
fi
echo; echo "== lifeboat verify-restore --set nova-config --check-commands …  (a throwaway folder, every file's sha256)"
LIFEBOAT_AGE_IDENTITY="$identity" lifeboat verify-restore --set nova-config --max-age 1h --max-restore-time 5m \
  --check-commands '- name: nova.conf names the message queue
  run: grep -q "^transport_url = " "$RESTORED_DIR/nova.conf"'

echo; echo "== lifeboat status --max-age 26h --require-verified true"
lifeboat status --max-age 26h --require-verified true

echo; echo "files drill passed: backed up, listed, restored, compared, verified"

echo; echo "==== the MySQL drill"
node "$root/scripts/mysql-drill.ts"
echo; echo "drill passed: files and MySQL backed up, listed, restored, compared, verified (in $drill)"
