// matrix-js-sdk against Qasid: password login, whoami, device list and rename, logout.
// Usage: node login.mjs '{"baseUrl": "...", "user": "...", "password": "..."}'  -> prints one JSON line.
import * as sdk from "matrix-js-sdk";

const args = JSON.parse(process.argv[2]);
const out = {};
const client = sdk.createClient({ baseUrl: args.baseUrl });
const login = await client.loginRequest({
  type: "m.login.password",
  identifier: { type: "m.id.user", user: args.user },
  password: args.password,
  initial_device_display_name: "js-sdk interop",
});
out.login = { user_id: login.user_id, device_id: login.device_id, has_token: Boolean(login.access_token) };
const authed = sdk.createClient({
  baseUrl: args.baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id,
});
out.versions = (await authed.getVersions()).versions;
out.whoami = await authed.whoami();
await authed.setDeviceDetails(login.device_id, { display_name: "renamed by js-sdk" });
out.devices = (await authed.getDevices()).devices.map((d) => ({ device_id: d.device_id, display_name: d.display_name }));
await authed.logout(true);
try {
  await authed.whoami();
  out.after_logout = "still valid";
} catch (e) {
  out.after_logout = e.errcode ?? String(e);
}
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);
