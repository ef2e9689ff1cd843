// matrix-js-sdk with its Rust crypto (matrix-sdk-crypto-wasm) against Qasid, driven from pytest:
// log in, upload device keys, join an encrypted room, query the other user's devices, decrypt a message
// a matrix-nio client sends, and send an encrypted reply. Prints JSON lines: {"ready": ...} then the result.
// Usage: node e2ee.mjs '{"baseUrl": "...", "user": "...", "password": "...", "roomId": "...", "peer": "@bob:..."}'

import { login, until as waitUntil } from "./helpers.mjs";

const args = JSON.parse(process.argv[2]);
const out = {};
const until = (fn, what, ms = 30000) => waitUntil(fn, what, ms, 100);
function emit(obj) { process.stdout.write(JSON.stringify(obj) + "\n"); }

const client = await login(args.baseUrl, args.user, args.password);
await client.initRustCrypto({ useIndexedDB: false });
const crypto = client.getCrypto();
await client.startClient({ initialSyncLimit: 20 });
await until(() => client.isInitialSyncComplete(), "initial sync");

// Our device keys reached the server (the Rust machine uploads them on its own after the first sync).
const selfKeys = await until(async () => {
  const r = await client.downloadKeysForUsers([client.getUserId()]);
  return r.device_keys?.[client.getUserId()]?.[client.getDeviceId()];
}, "own device keys on the server");
out.uploaded_keys = Object.keys(selfKeys.keys).sort();

await until(() => client.getRoom(args.roomId)?.getMyMembership() === "invite", "the invite");
await client.joinRoom(args.roomId);
await until(async () => await crypto.isEncryptionEnabledInRoom(args.roomId), "encryption enabled in the room");
emit({ ready: true, device_id: client.getDeviceId() });

const devices = await crypto.getUserDeviceInfo([args.peer], true);
out.peer_devices = [...(devices.get(args.peer)?.keys() ?? [])];

const decrypted = await until(() => {
  const evs = client.getRoom(args.roomId).getLiveTimeline().getEvents()
    .filter((e) => e.isEncrypted() && e.getSender() === args.peer && e.getType() === "m.room.message" && !e.isDecryptionFailure());
  return evs.length ? evs[evs.length - 1] : null;
}, "a decrypted message from the peer", 60000);
out.decrypted_body = decrypted.getContent().body;
out.wire_type = decrypted.getWireType();

await client.sendTextMessage(args.roomId, "reply from js-sdk, encrypted");
const sentOk = await until(() => client.getRoom(args.roomId).getLiveTimeline().getEvents()
  .some((e) => e.getSender() === client.getUserId() && e.getWireType() === "m.room.encrypted" && e.status === null), "our encrypted reply sent");
out.reply_sent_encrypted = !!sentOk;
client.stopClient();
emit(out);
process.exit(0);
