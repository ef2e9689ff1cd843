// matrix-js-sdk on simplified sliding sync (MSC4186) against Qasid: bob's client runs on SlidingSync
// (the SDK's SlidingSyncSdk, as Element Web's sliding sync mode), alice on /sync. Bob sees an invite,
// joins, receives messages live, sees alice type and read, and a room outside his window arrives once
// it has news; the answers are the SDK's own view of the rooms.
// Usage: node sliding.mjs '{"baseUrl": "...", "alice": {"user":..,"password":..}, "bob": {...}}'
import { SlidingSync } from "matrix-js-sdk/lib/sliding-sync.js";

import { login as loginAs, until } from "./helpers.mjs";

const args = JSON.parse(process.argv[2]);
const out = {};
const login = (who) => loginAs(args.baseUrl, who.user, who.password);

const alice = await login(args.alice);
const bob = await login(args.bob);
// Some history before bob starts: three rooms he is in, the newest activity last.
const names = ["Old news", "Budget", "Planning"];
const early = [];
for (const name of names) {
  const { room_id } = await alice.createRoom({ name, preset: "public_chat" });
  await bob.joinRoom(room_id);
  await alice.sendTextMessage(room_id, `first words in ${name}`);
  early.push(room_id);
}
await alice.startClient({ initialSyncLimit: 10 });

const requiredState = [["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"], ["m.room.create", ""]];
const lists = new Map([["all", { ranges: [[0, 1]], timeline_limit: 10, required_state: requiredState }]]);
const ss = new SlidingSync(args.baseUrl, lists, { timeline_limit: 20, required_state: requiredState }, bob, 5000);
let responses = 0;
ss.on("SlidingSync.Lifecycle", (state, resp, err) => {
  if (state === "COMPLETE" && resp) responses++;
  if (err) out.errors = [...(out.errors ?? []), String(err.httpStatus ?? err)];
});
await bob.startClient({ slidingSync: ss });
await until(() => responses > 0 && bob.getRoom(early[2]) && bob.getRoom(early[1]), "the two newest rooms");
out.window_rooms = [early[2], early[1]].map((id) => bob.getRoom(id).name);
out.oldest_in_window_at_start = Boolean(bob.getRoom(early[0]));
out.count = ss.getListData("all")?.joinedCount;

const timeline = (id) => bob.getRoom(id)?.getLiveTimeline().getEvents().filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body) ?? [];
out.history_seen = timeline(early[2]);

// Live: a message in a room bob holds.
await alice.sendTextMessage(early[2], "live message");
await until(() => timeline(early[2]).includes("live message"), "the live message");
// The oldest room gets news and moves into the window.
await alice.sendTextMessage(early[0], "old room wakes up");
await until(() => timeline(early[0]).includes("old room wakes up"), "the old room coming into the window");
out.old_room_name = bob.getRoom(early[0]).name;

// An invite to a new room, accepted; then a conversation both ways.
const { room_id: fresh } = await alice.createRoom({ name: "Fresh", preset: "private_chat" });
await alice.invite(fresh, bob.getUserId());
await until(() => bob.getRoom(fresh)?.getMyMembership() === "invite", "bob sees the invite");
out.invite_name = bob.getRoom(fresh).name;
await bob.joinRoom(fresh);
await until(() => bob.getRoom(fresh)?.getMyMembership() === "join", "bob's join arrives");
await alice.sendTextMessage(fresh, "welcome");
await until(() => timeline(fresh).includes("welcome"), "bob receives welcome");
await bob.sendTextMessage(fresh, "thanks");
await until(() => alice.getRoom(fresh)?.getLiveTimeline().getEvents().some((e) => e.getContent().body === "thanks"), "alice receives the reply");
out.conversation = timeline(fresh);

// Typing and a read receipt reach bob through the extensions.
await alice.sendTyping(fresh, true, 10000);
await until(() => bob.getRoom(fresh).getMember(alice.getUserId())?.typing, "bob sees alice typing");
out.typing_seen = true;
const mine = bob.getRoom(fresh).getLiveTimeline().getEvents().filter((e) => e.getContent().body === "thanks").pop();
const aliceView = alice.getRoom(fresh).findEventById(mine.getId());
await alice.sendReadReceipt(aliceView);
await until(() => bob.getRoom(fresh).getUsersReadUpTo(mine).includes(alice.getUserId()), "bob sees alice's receipt");
out.receipt_seen = true;
out.responses = responses;
ss.stop();
alice.stopClient();
bob.stopClient();
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);
