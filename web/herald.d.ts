// Types of herald.js (docs/client.md).

export type Transport = "ws" | "sse" | "poll";
export type Status = "connecting" | "live" | "reconnecting" | "closed";

export interface Position {
  epoch: string;
  offset: number;
}

export interface Member {
  user_id: string;
  user_info: unknown;
}

export interface Subscribed extends Position {
  channel: string;
  recovered: boolean;
  members?: Member[];
}

export interface Message extends Position {
  channel: string;
  data: unknown;
  event?: string;
}

export interface HeraldError {
  code: string;
  message: string;
  channel?: string;
}

export interface Options {
  /** The site's public key (`key=`); the dev site needs none. */
  key?: string;
  /** A client token, or `getToken` to fetch one before each connection and before it expires. */
  token?: string;
  getToken?: () => Promise<string> | string;
  /** The transports to try, in order (default: all three). */
  transports?: Transport[];
  /** How long a transport may take to give its first answer before the next is tried (8000 ms). */
  connectTimeout?: number;
  /** While on a fallback, how often WebSocket is tried again on the side (60000 ms). */
  probeInterval?: number;
  onStatus?: (status: Status) => void;
  onError?: (error: HeraldError) => void;
  onTransport?: (transport: Transport) => void;
  /** Constructors to use instead of the globals (Node, tests). */
  WebSocket?: unknown;
  EventSource?: unknown;
  fetch?: typeof fetch;
}

export interface Handlers {
  onMessage?: (data: unknown, message: Message) => void;
  onSubscribed?: (subscribed: Subscribed) => void;
  /** After every resubscribe: `false` means messages were missed; reload the channel. */
  onRecovered?: (recovered: boolean) => void;
  onMemberAdded?: (member: Member) => void;
  onMemberRemoved?: (member: { user_id: string }) => void;
  /** Resume from a position (from `/api/history`, say). */
  since?: Position;
  /** Signs a `private-` or `presence-` subscribe for this connection (WebSocket). */
  authorize?: (
    channel: string,
    connectionId: string,
  ) => Promise<{ signature: string; channelData?: string }> | { signature: string; channelData?: string };
}

export class Herald {
  constructor(url: string, options?: Options);
  readonly status: Status;
  readonly transport: Transport | null;
  subscribe(channel: string, handlers?: Handlers): void;
  unsubscribe(channel: string): void;
  members(channel: string): Member[];
  on(event: "status", listener: (status: Status) => void): this;
  on(event: "error", listener: (error: HeraldError) => void): this;
  on(event: "transport", listener: (transport: Transport) => void): this;
  on(event: "recovered", listener: (value: { channel: string; recovered: boolean }) => void): this;
  on(
    event: "member_added" | "member_removed",
    listener: (value: { channel: string; member: Member }) => void,
  ): this;
  close(): void;
}

/** herald.js 0.1's name for the same client. */
export { Herald as HeraldSocket };

/** A full-jitter back-off delay in ms for retry number `attempt` (0-based). */
export function backoff(attempt: number, base?: number, cap?: number): number;
