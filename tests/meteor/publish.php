<?php
// Publishes one notice to Herald's Meteor controller port the way StatusNet's and GNU social's
// Meteor plugin (plugins/Meteor/MeteorPlugin.php) does: a persistent socket opened with
// stream_socket_client (5 s timeout, STREAM_CLIENT_PERSISTENT), then for each timeline path
// `ADDMESSAGE <channel> <addslashes(json_encode($notice))>\n` written with fwrite and exactly one
// reply line read with fgets, a reply matching /^ERR (.*)$/ raising an exception; the channel is
// the path joined with '-' behind the channelbase. With persistence on, nothing is sent at the
// end (no QUIT), as in the plugin.
//
// Usage: php publish.php HOST PORT CHANNELBASE PATH [PATH...]
//   CHANNELBASE may be '' (none); a PATH is a timeline path with '/' between its parts: all/evan
// The notice's id is 123, or NOTICE_ID from the environment (its text then ends in " #<id>").
// Prints the notice's JSON (json_encode, as the plugin encodes it) on the first line, then one
// line per PATH: the channel, a tab, and Herald's reply without its line end.

class MeteorPublisher
{
    private $controlserver;
    private $controlport;
    private $channelbase;
    private $socket;

    public function __construct($controlserver, $controlport, $channelbase)
    {
        $this->controlserver = $controlserver;
        $this->controlport = $controlport;
        $this->channelbase = $channelbase;
    }

    public function connect()
    {
        $errno = $errstr = null;
        $timeout = 5;
        $flags = STREAM_CLIENT_CONNECT | STREAM_CLIENT_PERSISTENT;
        $this->socket = stream_socket_client(
            "tcp://{$this->controlserver}:{$this->controlport}", $errno, $errstr, $timeout, $flags);
        if (!$this->socket) {
            throw new Exception("Could not connect to {$this->controlserver} on {$this->controlport}.");
        }
    }

    public function publish($channel, $message)
    {
        $message = json_encode($message);
        $message = addslashes($message);
        $cmd = "ADDMESSAGE $channel $message\n";
        fwrite($this->socket, $cmd);
        $result = fgets($this->socket);
        if (preg_match('/^ERR (.*)$/', $result, $matches)) {
            throw new Exception("Error adding meteor message \"{$matches[1]}\".");
        }
        return $result;
    }

    public function pathToChannel(array $path)
    {
        if (!empty($this->channelbase)) {
            array_unshift($path, $this->channelbase);
        }
        return implode('-', $path);
    }
}

if ($argc < 5) {
    fwrite(STDERR, "usage: php publish.php HOST PORT CHANNELBASE PATH [PATH...]\n");
    exit(2);
}
[, $host, $port, $channelbase] = $argv;
$paths = array_slice($argv, 4);

// A notice as RealtimePlugin::noticeAsJson() shapes it (shared/reference/protocols.md §5.4), with
// what addslashes escapes (quotes, apostrophes, backslashes) and what json_encode escapes (slashes,
// non-ASCII text) in it.
$id = (int) (getenv('NOTICE_ID') ?: 123);
$text = "It's a \"quoted\" notice with a back\\slash, caf\u{e9} and \u{1f600} #rust";
$notice = [
    'text' => $id === 123 ? $text : "$text #$id",
    'truncated' => false,
    'created_at' => 'Sat Jul 23 12:00:00 +0000 2011',
    'in_reply_to_status_id' => null,
    'source' => 'web',
    'id' => $id,
    'in_reply_to_user_id' => null,
    'in_reply_to_screen_name' => null,
    'geo' => null,
    'favorited' => false,
    'user' => [
        'id' => 1,
        'name' => 'Evan',
        'screen_name' => 'evan',
        'profile_url' => 'http://example.net/evan',
    ],
    'statusnet_html' => 'It&#039;s a <a href="http://example.net/tag/rust" rel="tag">#rust</a> notice',
    'url' => 'http://example.net/notice/123',
    'html' => htmlspecialchars('<p>It\'s a "quoted" notice</p>'),
    'conversation_url' => 'http://example.net/conversation/1#notice-123',
];

echo json_encode($notice), "\n";
$meteor = new MeteorPublisher($host, $port, $channelbase);
$meteor->connect();
foreach ($paths as $path) {
    $channel = $meteor->pathToChannel(explode('/', $path));
    $reply = $meteor->publish($channel, $notice);
    echo $channel, "\t", rtrim($reply, "\r\n"), "\n";
}
