// Shared by the interop scripts: waiting for a condition, and logging in with a password.
import * as sdk from "matrix-js-sdk";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(fn, what, ms = 20000, step = 50) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await fn();
    if (v) return v;
    await sleep(step);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export async function login(baseUrl, user, password) {
  const anon = sdk.createClient({ baseUrl });
  const r = await anon.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user }, password });
  return sdk.createClient({ baseUrl, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id });
}
