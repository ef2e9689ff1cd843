// matrix-js-sdk chat flow against Qasid: two clients sync, create a room, invite/join, message, react,
// edit, redact, paginate history, see typing and receipts, and restart from the last sync token.
// Usage: node chat.mjs '{"baseUrl": "...", "alice": {"user":..,"password":..}, "bob": {...}}'

import { login as loginAs, until as waitUntil } from "./helpers.mjs";

const args = JSON.parse(process.argv[2]);
const out = {};
const until = (fn, what, ms = 15000) => waitUntil(fn, what, ms);
const login = (who) => loginAs(args.baseUrl, who.user, who.password);

const alice = await login(args.alice);
const bob = await login(args.bob);
for (const c of [alice, bob]) {
  await c.startClient({ initialSyncLimit: 20 });
}
await until(() => alice.isInitialSyncComplete() && bob.isInitialSyncComplete(), "initial sync");

const { room_id: roomId } = await alice.createRoom({ name: "Interop room", preset: "private_chat" });
await alice.invite(roomId, bob.getUserId());
await until(() => bob.getRoom(roomId)?.getMyMembership() === "invite", "bob sees the invite");
await bob.joinRoom(roomId);
await until(() => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join", "alice sees bob join");
out.room_name_seen_by_bob = bob.getRoom(roomId).name;

const sent = await alice.sendTextMessage(roomId, "hello from js-sdk");
const bodies = (c) => c.getRoom(roomId).getLiveTimeline().getEvents().filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body);
await until(() => bodies(bob).includes("hello from js-sdk"), "bob receives the message");
await bob.sendEvent(roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: sent.event_id, key: "👍" } });
await until(() => alice.getRoom(roomId).getLiveTimeline().getEvents().some((e) => e.getType() === "m.reaction"), "alice sees the reaction");
await alice.sendMessage(roomId, {
  msgtype: "m.text", body: "* hello, edited",
  "m.new_content": { msgtype: "m.text", body: "hello, edited" },
  "m.relates_to": { rel_type: "m.replace", event_id: sent.event_id },
});
await until(() => bob.getRoom(roomId).findEventById(sent.event_id)?.replacingEvent(), "bob sees the edit");
out.edited_body_seen_by_bob = bob.getRoom(roomId).findEventById(sent.event_id).getContent().body;
const doomed = await alice.sendTextMessage(roomId, "to be redacted");
await until(() => bob.getRoom(roomId).findEventById(doomed.event_id), "bob sees the doomed message");
await alice.redactEvent(roomId, doomed.event_id);
await until(() => bob.getRoom(roomId).findEventById(doomed.event_id)?.isRedacted(), "bob sees the redaction");
out.redacted = true;

await alice.sendTyping(roomId, true, 5000);
await until(() => bob.getRoom(roomId).getMember(alice.getUserId())?.typing, "bob sees alice typing");
out.typing_seen = true;
const last = bob.getRoom(roomId).getLiveTimeline().getEvents().filter((e) => e.getType() === "m.room.message").pop();
await bob.sendReadReceipt(last);
await until(() => alice.getRoom(roomId).getUsersReadUpTo(last).includes(bob.getUserId()), "alice sees bob's receipt");
out.receipt_seen = true;

for (let i = 0; i < 30; i++) await alice.sendTextMessage(roomId, `history ${i}`);
await until(() => bodies(bob).includes("history 29"), "bob receives history");
// A fresh client with a small initial window paginates back to the start.
const bob2 = await login(args.bob);
await bob2.startClient({ initialSyncLimit: 5 });
await until(() => bob2.getRoom(roomId), "second bob sees the room");
const room2 = bob2.getRoom(roomId);
for (let i = 0; i < 10 && room2.getLiveTimeline().getPaginationToken("b"); i++) {
  await bob2.scrollback(room2, 20);
}
out.history_after_pagination = bodies(bob2).filter((b) => typeof b === "string" && b.startsWith("history")).length;
out.first_message_reached = room2.getLiveTimeline().getEvents().some((e) => e.getType() === "m.room.create");

// Restart from the saved sync token: only new events arrive.
const token = bob.getSyncStateData()?.nextSyncToken ?? bob.store.getSyncToken();
bob.stopClient();
await alice.sendTextMessage(roomId, "after restart");
const r = await bob.http.authedRequest("GET", "/sync", { since: token, timeout: "10000" });
const newBodies = (r.rooms?.join?.[roomId]?.timeline?.events ?? []).map((e) => e.content?.body);
out.after_restart = newBodies;
for (const c of [alice, bob2]) c.stopClient();
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);
