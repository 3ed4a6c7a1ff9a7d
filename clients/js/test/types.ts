// Compiled by `tsc --noEmit` (npm test): the types describe how the library is used, and catch
// what would be a mistake.
import { watch, FINAL_REASONS } from "matchstream-client";
import type { ByeFrame, EventFrame, StatusFrame, Watch, WatchState, StateInfo } from "matchstream-client";

const w: Watch = watch("https://live.example.com", "elp-tig-2011-09-10", {
  onStatus: (frame: StatusFrame) => {
    const home: number = frame.data["home-score"];
    const seq: number = frame.seq;
    void [home, seq, frame.data.period === "first"];
  },
  onEvent: (frame: EventFrame) => {
    if (frame.kind === "goal" && frame.data.player) {
      const scorer: string = `${frame.data.player.name} (${frame.data.player.number})`;
      void scorer;
    }
  },
  onBye: (frame: ByeFrame) => {
    const final: boolean = FINAL_REASONS.includes(frame.reason);
    void [final, frame.retry_after_ms, frame.try];
  },
  onState: (state: WatchState, info: StateInfo) => {
    void [state, info.transport, info.connects, info.lastSeq];
  },
  transport: "sse",
  from: 12,
});
const last: number | null = w.lastSeq;
void last;
w.close();

watch(new URL("http://127.0.0.1:8888"), "a-b-2020-01-01");

// @ts-expect-error: no such transport
watch("http://x", "m", { transport: "long-polling" });
// @ts-expect-error: an event handler gets an event frame, not a string
watch("http://x", "m", { onEvent: (frame: string) => void frame });
// @ts-expect-error: not a bye reason
const reason: ByeFrame["reason"] = "gone";
void reason;
