/* Tokenizer throughput, one thread.
 *
 *   build/bench/tokbench [-t tokenizer.json] [-m MB] [-a] [text-file]
 *
 * Loads tokenizer.json (default $DS4_SHARED or ../shared, data/tokenizer/),
 * then encodes either text-file or MB (default 8) of generated English-like
 * prose: common words from a fixed list drawn by a seeded Zipf-ish PRNG,
 * capitals, commas, full stops, some numbers and paragraph breaks, so runs
 * are reproducible on any machine.  The text is encoded in chunks of up to 64 KiB
 * ending at line breaks (as a server would see requests); prints load time, MB/s and tokens/s for
 * the best of 3 passes after one warm-up.  -a: also check decode round trip. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text/tokenizer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *const WORDS[] = {
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as",
    "I", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "not", "word", "but", "what",
    "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an",
    "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write",
    "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more",
    "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water",
    "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part",
    "take", "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year",
    "came", "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just", "form",
    "sentence", "great", "think", "say", "help", "low", "line", "differ", "turn", "cause", "much", "mean",
    "before", "move", "right", "boy", "old", "too", "same", "tell", "does", "set", "three", "want", "air", "well",
    "also", "play", "small", "end", "put", "home", "read", "hand", "port", "large", "spell", "add", "even", "land",
    "here", "must", "big", "high", "such", "follow", "act", "why", "ask", "men", "change", "went", "light", "kind",
    "off", "need", "house", "picture", "try", "us", "again", "animal", "point", "mother", "world", "near", "build",
    "self", "earth", "father", "head", "stand", "own", "page", "should", "country", "found", "answer", "school",
    "grow", "study", "still", "learn", "plant", "cover", "food", "sun", "four", "between", "state", "keep", "eye",
    "never", "last", "let", "thought", "city", "tree", "cross", "farm", "hard", "start", "might", "story", "saw",
    "far", "sea", "draw", "left", "late", "run", "don't", "while", "press", "close", "night", "real", "life",
    "few", "north", "open", "seem", "together", "next", "white", "children", "begin", "got", "walk", "example",
    "ease", "paper", "group", "always", "music", "those", "both", "mark", "often", "letter", "until", "mile",
    "river", "car", "feet", "care", "second", "book", "carry", "took", "science", "eat", "room", "friend",
    "began", "idea", "fish", "mountain", "stop", "once", "base", "hear", "horse", "cut", "sure", "watch", "color",
    "face", "wood", "main", "enough", "plain", "girl", "usual", "young", "ready", "above", "ever", "red", "list",
    "though", "feel", "talk", "bird", "soon", "body", "dog", "family", "direct", "pose", "leave", "song",
    "measure", "door", "product", "black", "short", "numeral", "class", "wind", "question", "happen", "complete",
    "ship", "area", "half", "rock", "order", "fire", "south", "problem", "piece", "told", "knew", "pass", "since",
    "top", "whole", "king", "space", "heard", "best", "hour", "better", "true", "during", "hundred", "five",
    "remember", "step", "early", "hold", "west", "ground", "interest", "reach", "fast", "verb", "sing", "listen",
    "six", "table", "travel", "less", "morning", "ten", "simple", "several", "vowel", "toward", "war", "lay",
    "against", "pattern", "slow", "center", "love", "person", "money", "serve", "appear", "road", "map", "rain",
    "rule", "govern", "pull", "cold", "notice", "voice", "unit", "power", "town", "fine", "certain", "fly",
    "fall", "lead", "cry", "dark", "machine", "note", "wait", "plan", "figure", "star", "box", "noun", "field",
    "rest", "correct", "able", "pound", "done", "beauty", "drive", "stood", "contain", "front", "teach", "week",
    "final", "gave", "green", "oh", "quick", "develop", "ocean", "warm", "free", "minute", "strong", "special",
    "mind", "behind", "clear", "tail", "produce", "fact", "street", "inch", "multiply", "nothing", "course",
    "stay", "wheel", "full", "force", "blue", "object", "decide", "surface", "deep", "moon", "island", "foot",
    "system", "busy", "test", "record", "boat", "common", "gold", "possible", "plane", "stead", "dry", "wonder",
    "laugh", "thousand", "ago", "ran", "check", "game", "shape", "equate", "hot", "miss", "brought", "heat",
    "snow", "tire", "bring", "yes", "distant", "fill", "east", "paint", "language", "among", "tokenizer",
    "inference", "engine", "throughput", "architecture", "representation", "unbelievably", "extraordinary",
};

static uint64_t rng;
static uint32_t next_u32(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}

/* Zipf-ish: the square of a uniform favours the front of the list. */
static const char *pick_word(void) {
    size_t n = sizeof WORDS / sizeof WORDS[0];
    double u = next_u32() / 4294967296.0;
    return WORDS[(size_t)(u * u * (double)n)];
}

static char *gen_english(size_t bytes) {
    char *s = malloc(bytes + 64);
    size_t o = 0;
    int in_sentence = 0, words_in_sentence = 0, sentences = 0;
    rng = 0x5eed;
    while (o < bytes) {
        const char *w = pick_word();
        size_t wl = strlen(w);
        if (in_sentence) s[o++] = ' ';
        memcpy(s + o, w, wl);
        if (!in_sentence && s[o] >= 'a' && s[o] <= 'z') s[o] = (char)(s[o] - 32);
        o += wl;
        in_sentence = 1;
        words_in_sentence++;
        uint32_t r = next_u32() % 100;
        if (r < 2) o += (size_t)sprintf(s + o, " %u", next_u32() % 2000);
        else if (r < 9) s[o++] = ',';
        if (words_in_sentence > 6 && next_u32() % 8 == 0) {
            s[o++] = next_u32() % 10 == 0 ? '?' : '.';
            in_sentence = 0;
            words_in_sentence = 0;
            if (++sentences % 6 == 0) {
                s[o++] = '\n';
                s[o++] = '\n';
            } else {
                s[o++] = ' ';
            }
        }
    }
    s[o] = 0;
    return s;
}

static char *read_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp);
        free(buf);
        return NULL;
    }
    fclose(fp);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv) {
    char tokpath[1024];
    const char *shared = getenv("DS4_SHARED");
    snprintf(tokpath, sizeof tokpath, "%s/data/tokenizer/tokenizer.json", shared ? shared : "../shared");
    const char *file = NULL;
    double mb = 8;
    int check = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) snprintf(tokpath, sizeof tokpath, "%s", argv[++i]);
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "-a")) check = 1;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [-t tokenizer.json] [-m MB] [-a] [text-file]\n", argv[0]);
            return 2;
        } else file = argv[i];
    }
    ds4_err err = {{0}};
    double t0 = now_s();
    ds4_tokenizer *tok = ds4_tokenizer_load_json(tokpath, &err);
    double t_load = now_s() - t0;
    if (!tok) {
        fprintf(stderr, "tokbench: %s\n", err.msg);
        return 1;
    }
    size_t len;
    char *text;
    if (file) {
        text = read_file(file, &len);
        if (!text) {
            fprintf(stderr, "tokbench: cannot read %s\n", file);
            return 1;
        }
    } else {
        len = (size_t)(mb * 1e6);
        text = gen_english(len);
        len = strlen(text);
    }
    printf("tokenizer.json load: %.3f s (%d ids, %d merges, %d added)\n", t_load, ds4_tok_n_vocab(tok),
           ds4_tok_n_merges(tok), ds4_tok_n_added(tok));
    printf("text: %s, %.2f MB\n", file ? file : "generated English", len / 1e6);

    const size_t chunk = 64 * 1024;
    ds4_tok_ids ids = {0};
    double best = 1e30;
    size_t n_tok = 0;
    for (int pass = 0; pass < 4; pass++) {
        ids.n = 0;
        double t1 = now_s();
        for (size_t off = 0, n; off < len; off += n) {
            n = len - off < chunk ? len - off : chunk;
            /* End chunks at a line break so no word or character is cut. */
            const char *nl = n < len - off ? memrchr(text + off, '\n', n) : NULL;
            if (nl) n = (size_t)(nl - (text + off)) + 1;
            if (ds4_tok_encode(tok, text + off, n, 0, &ids, &err) < 0) {
                fprintf(stderr, "tokbench: %s\n", err.msg);
                return 1;
            }
        }
        double dt = now_s() - t1;
        n_tok = ids.n;
        if (pass == 0) printf("pass 0 (cold cache): %.1f MB/s\n", len / 1e6 / dt);
        else if (dt < best) best = dt;
    }
    printf("encode: %.1f MB/s, %.2f M tokens/s (%zu tokens, %.2f bytes/token)\n", len / 1e6 / best,
           n_tok / 1e6 / best, n_tok, (double)len / (double)n_tok);
    if (check) {
        char *d;
        size_t dl;
        double t2 = now_s();
        ds4_tok_decode(tok, ids.ids, ids.n, &d, &dl, NULL);
        double dt = now_s() - t2;
        printf("decode: %.1f MB/s, round trip %s\n", dl / 1e6 / dt, dl == len && !memcmp(d, text, len) ? "ok" : "MISMATCH");
        free(d);
    }
    ds4_tok_ids_free(&ids);
    free(text);
    ds4_tokenizer_free(tok);
    return 0;
}
