import { io } from "socket.io-client";
const [url, n, secs, transports] = [process.argv[2], +process.argv[3], +process.argv[4], process.argv[5]];
let up = 0;
const socks = [];
for (let i = 0; i < n; i++) {
  const s = io(url, { transports: transports.split(","), reconnection: false });
  s.on("connect", () => { up++; });
  socks.push(s);
  if (i % 200 === 199) await new Promise((r) => setTimeout(r, 50));
}
await new Promise((r) => setTimeout(r, secs * 1000));
console.log(`connected ${up} of ${n}`);
socks.forEach((s) => s.close());
process.exit(0);
