package weir.peers;

import java.io.IOException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Kafka Streams peer for the Weir benchmark.
 *
 * <pre>
 * java -Xmx512m -cp 'target/kstreams-peer.jar:target/libs/*' weir.peers.KStreamsPeer \
 *   --bootstrap HOST:PORT --input TOPIC --output TOPIC --job identity|count \
 *   --guarantee at-least-once|exactly-once --parallelism N --app-id ID
 * </pre>
 *
 * Runs until killed. Stdout carries only the line {@code READY}, printed once when the
 * client first reaches RUNNING. Logs (WARN and above) go to stderr. Exits with status 1
 * if the client dies on its own (state ERROR), status 2 on bad arguments.
 */
public final class KStreamsPeer {

    private KStreamsPeer() {}

    static Topology topology(String job, String input, String output) {
        StreamsBuilder builder = new StreamsBuilder();
        switch (job) {
            case "identity":
                // Bytes in, same bytes out: no (de)serialisation cost beyond copying.
                builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                        .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
                break;
            case "count":
                // Input is already partitioned by key: groupByKey() adds no repartition topic.
                // With statestore.cache.max.bytes=0 every update is forwarded, so a key with n
                // records yields "1", "2", ..., "n".
                builder.stream(input, Consumed.with(Serdes.String(), Serdes.ByteArray()))
                        .groupByKey(Grouped.with(Serdes.String(), Serdes.ByteArray()))
                        .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts")
                                .withKeySerde(Serdes.String())
                                .withValueSerde(Serdes.Long()))
                        .toStream()
                        .mapValues(n -> Long.toString(n))
                        .to(output, Produced.with(Serdes.String(), Serdes.String()));
                break;
            default:
                throw new IllegalArgumentException("--job must be identity or count, got " + job);
        }
        return builder.build();
    }

    static Properties config(Map<String, String> a, Path stateDir) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.get("app-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("bootstrap"));
        String g = a.get("guarantee");
        switch (g) {
            case "at-least-once":
                p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
                break;
            case "exactly-once":
                p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
                break;
            default:
                throw new IllegalArgumentException(
                        "--guarantee must be at-least-once or exactly-once, got " + g);
        }
        int parallelism = Integer.parseInt(a.get("parallelism"));
        if (parallelism < 1) {
            throw new IllegalArgumentException("--parallelism must be >= 1");
        }
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, parallelism);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0L);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        return p;
    }

    static Map<String, String> parseArgs(String[] args) {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String k = args[i];
            if (!k.startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("bad argument: " + k);
            }
            a.put(k.substring(2), args[++i]);
        }
        for (String req : new String[] {
                "bootstrap", "input", "output", "job", "guarantee", "parallelism", "app-id"}) {
            if (!a.containsKey(req)) {
                throw new IllegalArgumentException("missing --" + req);
            }
        }
        return a;
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> a;
        Properties props;
        Topology topology;
        Path stateDir = null;
        try {
            a = parseArgs(args);
            topology = topology(a.get("job"), a.get("input"), a.get("output"));
            stateDir = Files.createTempDirectory("kstreams-peer-");
            props = config(a, stateDir);
        } catch (IllegalArgumentException e) {
            if (stateDir != null) {
                deleteQuietly(stateDir);
            }
            System.err.println("kstreams-peer: " + e.getMessage());
            System.err.println("usage: KStreamsPeer --bootstrap HOST:PORT --input TOPIC --output TOPIC"
                    + " --job identity|count --guarantee at-least-once|exactly-once"
                    + " --parallelism N --app-id ID");
            System.exit(2);
            return;
        }

        final Path stateDirFinal = stateDir;
        KafkaStreams streams = new KafkaStreams(topology, props);
        AtomicBoolean ready = new AtomicBoolean(false);
        AtomicBoolean stopping = new AtomicBoolean(false);
        CountDownLatch done = new CountDownLatch(1);

        streams.setStateListener((newState, oldState) -> {
            if (newState == KafkaStreams.State.RUNNING && ready.compareAndSet(false, true)) {
                System.out.println("READY");
                System.out.flush();
            }
            if (newState == KafkaStreams.State.ERROR && !stopping.get()) {
                System.err.println("kstreams-peer: streams client entered ERROR state");
                done.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("kstreams-peer: stream thread failed: " + e);
            e.printStackTrace(System.err);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stopping.set(true);
            streams.close(Duration.ofSeconds(5));
            deleteQuietly(stateDirFinal);
            done.countDown();
        }, "kstreams-peer-shutdown"));

        streams.start();
        done.await();
        if (!stopping.get()) {
            // The client died on its own: close it and report failure.
            streams.close(Duration.ofSeconds(5));
            deleteQuietly(stateDir);
            System.exit(1);
        }
    }

    private static void deleteQuietly(Path dir) {
        try {
            if (!Files.exists(dir)) {
                return;
            }
            Files.walkFileTree(dir, new SimpleFileVisitor<>() {
                @Override
                public FileVisitResult visitFile(Path f, BasicFileAttributes attrs) throws IOException {
                    Files.deleteIfExists(f);
                    return FileVisitResult.CONTINUE;
                }

                @Override
                public FileVisitResult postVisitDirectory(Path d, IOException e) throws IOException {
                    Files.deleteIfExists(d);
                    return FileVisitResult.CONTINUE;
                }
            });
        } catch (IOException ignored) {
            // best effort
        }
    }
}
